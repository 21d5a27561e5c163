"""Cutting clips out of a video: which frames, at what rate, at what size, split where.

Timeline. The video is resampled to `clips.fps` (or kept at its own rate): sampled frame j is
source frame floor(j * src_fps / fps) (nearest earlier frame; frames repeat when upsampling).
Clip c holds sampled frames [c*stride, c*stride + num_frames); only clips that fit entirely in
the video are cut, at most `max_clips_per_video`. Both decoders follow the same plan, so the
backend changes pixels only slightly, never which frames are taken.

Shots (`split_scenes`). Every sampled frame is decoded and scored by the shot-cut detector
(pipeline/readers/scenes.py); a cut at frame j ends the current shot and the clip timeline
restarts there: clip starts are shot start + c*stride, and a clip still open at a cut is
dropped, so no clip spans a cut. Clip indices count on over the whole video.

Whole videos (`num_frames: all`). Each shot (the whole video without `split_scenes`) becomes
one row: its longest 1 + k*t frame prefix, t the tokenizer's temporal factor. A row reaches
the tokenizer as chunks: the first of 1 + c frames, then c frames each (c = `chunk_frames`
rounded down to a multiple of t), the last one cut to a multiple of t; the final chunk says so.
`max_frames` caps a row (rounded down to 1 + k*t): the frames after the cap start the next
row, a new causal sequence. A row needs at least 1 + t frames.

Size. `resolution: [H, W]`: the shorter side is scaled to cover (H, W), aspect kept, then a
centre crop. `resolution: {short_side: S}`: the short side becomes S and the long side keeps
the aspect ratio (or becomes `max_long_side` when it would be longer, the short side then
shrinking), then both are rounded down to a multiple of the tokenizer's spatial factor by a
centre crop, the only crop. Frames stay uint8 channels-last [T, H, W, 3]; the conversion to
float [-1, 1] happens at the tokenizer boundary, not here.

Motion. `motion_score` = mean absolute difference between consecutive frames of the decoded
uint8 clip, over every pixel and channel (0..255; a static clip scores about 0, a steady pan
several units). Computed only when `min_motion` is set.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.readers.decode import Media, VideoError, VideoInfo, frame_reader, probe
from schemas.jobspec import ClipSpec, LimitSpec, ShortSide

_EPS = 1e-6  # guards floor() against float error on exact multiples (30000/1001 fps and such)


@dataclass(frozen=True)
class Grid:
    """The tokenizer's compression factors, which whole-video rows and `short_side` sizes follow."""

    temporal: int = 1
    spatial: int = 1


@dataclass
class ClipPlan:
    src_fps: float
    fps: float  # rate of the sampled timeline
    num_frames: int
    stride: int
    max_clips: int | None
    src_frames: int | None  # None: unknown until the decoder runs out

    @classmethod
    def build(cls, spec: ClipSpec, info: VideoInfo) -> ClipPlan:
        fps = float(spec.fps) if spec.fps else info.fps
        if spec.num_frames == "all" or spec.split_scenes:  # every sampled frame, to the end
            return cls(info.fps, fps, 1, 1, None, info.num_frames)
        return cls(info.fps, fps, spec.num_frames, spec.stride or spec.num_frames,
                   spec.max_clips_per_video, info.num_frames)

    def source_index(self, j: int) -> int:
        return int(math.floor(j * self.src_fps / self.fps + _EPS))

    def clips_of(self, j: int) -> range:
        """Clip indices whose window holds sampled frame j."""
        first = max(0, -(-(j - self.num_frames + 1) // self.stride))
        last = j // self.stride
        if self.max_clips is not None:
            last = min(last, self.max_clips - 1)
        return range(first, last + 1)

    def expected_clips(self) -> int | None:
        """Clip count when the source frame count is known (containers can be off by a frame)."""
        if self.src_frames is None:
            return None
        sampled = math.ceil(self.src_frames * self.fps / self.src_fps - _EPS)
        count = 0 if sampled < self.num_frames else (sampled - self.num_frames) // self.stride + 1
        return count if self.max_clips is None else min(count, self.max_clips)

    def wanted_sources(self) -> Iterator[int]:
        """Increasing, unique source indices of every frame some clip needs (lazy, may be endless)."""
        limit = self.expected_clips()
        if limit == 0:  # too short for a clip: decode one frame only, to tell "short" from "broken"
            yield 0
            return
        limit = self.max_clips if limit is None else limit
        last = -1
        j = 0
        while limit is None or j < (limit - 1) * self.stride + self.num_frames:
            if not self.clips_of(j):
                j = (j // self.stride + 1) * self.stride  # jump the gap to the next clip start
                continue
            src = self.source_index(j)
            if self.src_frames is not None and src >= self.src_frames:
                return
            if src != last:
                yield src
                last = src
            j += 1


def scaled_size(width: int, height: int, out_hw: tuple[int, int]) -> tuple[int, int]:
    """(w, h) after scaling the shorter side to cover `out_hw` = (H, W), aspect kept."""
    out_h, out_w = out_hw
    scale = max(out_h / height, out_w / width)
    return max(out_w, round(width * scale)), max(out_h, round(height * scale))


def frame_geometry(width: int, height: int, resolution: tuple[int, int] | ShortSide,
                   spatial: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
    """((w, h) to scale a width x height frame to, (H, W) of the centre crop) for `resolution`."""
    if not isinstance(resolution, ShortSide):
        return scaled_size(width, height, resolution), (int(resolution[0]), int(resolution[1]))
    scale = resolution.short_side / min(width, height)
    if resolution.max_long_side is not None and max(width, height) * scale > resolution.max_long_side:
        scale = resolution.max_long_side / max(width, height)
    w, h = max(spatial, round(width * scale)), max(spatial, round(height * scale))
    return (w, h), (h // spatial * spatial, w // spatial * spatial)


def center_crop(frames: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """frames: uint8 [..., h, w, 3] -> [..., H, W, 3], centred (a view, no copy)."""
    out_h, out_w = out_hw
    h, w = frames.shape[-3], frames.shape[-2]
    top, left = (h - out_h) // 2, (w - out_w) // 2
    return frames[..., top : top + out_h, left : left + out_w, :]


def motion_score(frames: np.ndarray) -> float:
    """Mean |frame[i] - frame[i-1]| over a uint8 clip [T, H, W, 3] (0.0 for a single frame)."""
    if frames.shape[0] < 2:
        return 0.0
    total = sum(float(np.abs(frames[i].astype(np.int16) - frames[i - 1]).sum()) for i in range(1, len(frames)))
    return total / (frames[1:].size)


@dataclass
class DecodedClip:
    index: int  # clip (or row) index in the video
    start_frame: int  # first frame on the sampled timeline
    fps: float
    frames: np.ndarray  # uint8 [T, H, W, 3]; a row's chunk for num_frames: all
    scene: int | None = None  # shot index in the video (split_scenes)
    scene_start: int | None = None  # the shot's first frame on the sampled timeline
    motion: float | None = None  # motion_score (min_motion); a row's: on its final chunk
    part: int | None = None  # chunk index inside the row (num_frames: all); None for a clip
    final: bool = True  # the row's last chunk


@dataclass
class VideoDone:
    """Sent after a video's last clip: what was seen, for stats."""

    clips: int
    frames_decoded: int  # source frames delivered by the decoder (wanted ones)
    duration: float  # seconds of video, from the container or the frames seen
    cuts: int = 0  # shot cuts found (split_scenes)


class _FixedClips:
    """Fixed-length clips of one video, the clip timeline restarting at every shot cut."""

    def __init__(self, plan: ClipPlan, spec: ClipSpec):
        self.num = int(spec.num_frames)  # never "all" here: _WholeRows cuts those
        self.stride, self.fps = spec.stride or self.num, plan.fps
        self.scenes, self.with_motion = spec.split_scenes, spec.min_motion is not None
        self.max_clips = spec.max_clips_per_video
        self.window: dict[int, np.ndarray] = {}  # sampled index -> frame, pending clips only
        self.scene, self.scene_start, self.next, self.count = 0, 0, 0, 0

    @property
    def full(self) -> bool:
        return self.max_clips is not None and self.count >= self.max_clips

    def push(self, j: int, frame: np.ndarray, cut: bool) -> Iterator[DecodedClip]:
        if cut:
            self.window.clear()
            self.scene, self.scene_start, self.next = self.scene + 1, j, 0
        start = self.scene_start + self.next * self.stride
        if j < start or self.full:
            return
        self.window[j] = frame
        if j == start + self.num - 1:
            clip = np.stack([self.window[k] for k in range(start, j + 1)])  # clip: [T, H, W, 3]
            yield DecodedClip(self.count, start, self.fps, clip,
                              self.scene if self.scenes else None, self.scene_start if self.scenes else None,
                              motion_score(clip) if self.with_motion else None)
            self.count += 1
            self.next += 1
            for k in [k for k in self.window if k < start + self.stride]:
                del self.window[k]

    def finish(self) -> Iterator[DecodedClip]:
        return iter(())


class _WholeRows:
    """Rows of 1 + k*t frames (one per shot, capped by max_frames), yielded as chunks (module doc)."""

    def __init__(self, plan: ClipPlan, spec: ClipSpec, grid: Grid):
        t = grid.temporal
        self.t, self.fps = t, plan.fps
        self.chunk = max(t, spec.chunk_frames // t * t)
        self.cap = None if spec.max_frames is None else 1 + (spec.max_frames - 1) // t * t
        self.scenes, self.with_motion = spec.split_scenes, spec.min_motion is not None
        self.max_rows = spec.max_clips_per_video
        self.scene, self.scene_start, self.count = 0, 0, 0
        self._new_row()

    def _new_row(self) -> None:
        self.start, self.length, self.part = 0, 0, 0
        self.pending: list[np.ndarray] = []  # frames not in a chunk yet
        self.pending_diffs: list[float] = []  # their summed |difference| to the frame before
        self.held: np.ndarray | None = None  # the last chunk, yielded once it is known whether it is final
        self.chunked = 0  # frames in chunks (held or yielded)
        self.diff_sum = 0.0  # over the chunked frames
        self.prev: np.ndarray | None = None

    @property
    def full(self) -> bool:
        return self.max_rows is not None and self.count >= self.max_rows

    def push(self, j: int, frame: np.ndarray, cut: bool) -> Iterator[DecodedClip]:
        if cut:
            yield from self._end_row()
            self.scene, self.scene_start = self.scene + 1, j
        if self.full:
            return
        if self.length == 0:
            self.start = j
        self.pending.append(frame)
        self.length += 1
        if self.with_motion:
            diff = 0.0 if self.prev is None else float(np.abs(frame.astype(np.int16) - self.prev).sum())
            self.pending_diffs.append(diff)
        self.prev = frame
        if len(self.pending) == (self.chunk if self.chunked else 1 + self.chunk):
            yield from self._chunk(len(self.pending), final=False)
        if self.cap is not None and self.length == self.cap:
            yield from self._end_row()

    def _chunk(self, n: int, final: bool) -> Iterator[DecodedClip]:
        """Make the first n pending frames a chunk; yield the held one before it, and it too if final."""
        chunk = np.stack(self.pending[:n])
        self.diff_sum += sum(self.pending_diffs[:n])
        self.chunked += n
        self.pending, self.pending_diffs = [], []
        if self.held is not None:
            yield self._piece(self.held, final=False)
        self.held = chunk
        if final:
            yield self._piece(chunk, final=True)
            self.held = None

    def _piece(self, frames: np.ndarray, final: bool) -> DecodedClip:
        motion = None
        if final and self.with_motion:
            motion = self.diff_sum / ((self.chunked - 1) * frames[0].size)
        piece = DecodedClip(self.count, self.start, self.fps, frames,
                            self.scene if self.scenes else None, self.scene_start if self.scenes else None,
                            motion, self.part, final)
        self.part += 1
        return piece

    def _end_row(self) -> Iterator[DecodedClip]:
        """Close the current row at its longest 1 + k*t prefix (the rest of the frames are dropped)."""
        n = len(self.pending)
        keep = n // self.t * self.t if self.chunked else (1 + (n - 1) // self.t * self.t if n else 0)
        if not self.chunked and keep < 1 + self.t:
            self._new_row()  # too short for a row
            return
        if keep:
            yield from self._chunk(keep, final=True)
        elif self.held is not None:
            held, self.held = self.held, None
            yield self._piece(held, final=True)
        self.count += 1
        self._new_row()

    def finish(self) -> Iterator[DecodedClip]:
        yield from self._end_row()


def cut_clips(data: Media, spec: ClipSpec, limits: LimitSpec | None = None,
              grid: Grid | None = None) -> Iterator[DecodedClip | VideoDone]:
    """Decode `data` and yield its clips (or row chunks) in order, then one VideoDone. Raises VideoError."""
    limits, grid = limits or LimitSpec(), grid or Grid()
    info = probe(data, limits.max_frame_pixels)
    plan = ClipPlan.build(spec, info)
    wanted = frame_budget(plan, limits.max_frames)
    size, out_hw = frame_geometry(info.width, info.height, spec.resolution, grid.spatial)
    reader = frame_reader(spec.decoder)
    cutter = _WholeRows(plan, spec, grid) if spec.num_frames == "all" else _FixedClips(plan, spec)
    shots = _shot_detector(spec)
    emitted, delivered, last_src = 0, 0, -1
    src_to_js = _sampled_of(plan)
    for src, frame in reader(data, info, wanted, size, spec.decoder_threads):
        delivered += 1
        last_src = src
        cropped = center_crop(frame, out_hw)
        for j in src_to_js(src):
            cut = shots.is_cut(frame) if shots is not None else False
            for clip in cutter.push(j, cropped, cut):
                emitted += clip.final
                yield clip
        if cutter.full:
            break
    if delivered == 0:
        raise VideoError("decode", "NoFrames", "the decoder produced no frames")
    for clip in cutter.finish():
        emitted += clip.final
        yield clip
    duration = info.duration or (last_src + 1) / info.fps
    yield VideoDone(emitted, delivered, duration, len(shots.cuts) if shots is not None else 0)


def _shot_detector(spec: ClipSpec):
    if not spec.split_scenes:
        return None
    from pipeline.readers.scenes import ShotCuts

    return ShotCuts(spec.scene_threshold)


def frame_budget(plan: ClipPlan, max_frames: int) -> Iterator[int]:
    """The plan's wanted source indices, refused past `max_frames` source frames: before any
    decoding when the container's frame count shows the plan needs more, else on reaching it."""
    clips = plan.expected_clips()
    clips = plan.max_clips if clips is None else clips
    if clips:
        last = plan.source_index((clips - 1) * plan.stride + plan.num_frames - 1)
        if last >= max_frames:
            raise VideoError("decode", "TooManyFrames", f"the clips need {last + 1} source frames "
                             f"(the container has {plan.src_frames}), over limits.max_frames ({max_frames})")
    return _bounded(plan.wanted_sources(), max_frames)


def _bounded(wanted: Iterator[int], max_frames: int) -> Iterator[int]:
    for src in wanted:
        if src >= max_frames:
            raise VideoError("decode", "TooManyFrames", f"decoding reached source frame {src + 1}, "
                             f"over limits.max_frames ({max_frames})")
        yield src


def _sampled_of(plan: ClipPlan):
    """source index -> the sampled indices j that use it (and lie in some clip)."""
    ratio = plan.fps / plan.src_fps

    def sampled(src: int) -> list[int]:
        lo = math.ceil(src * ratio - _EPS)
        hi = math.ceil((src + 1) * ratio - _EPS)
        return [j for j in range(lo, hi) if plan.source_index(j) == src and plan.clips_of(j)]

    return sampled
