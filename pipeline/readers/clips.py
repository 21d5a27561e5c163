"""Cutting fixed-length clips out of a video: which frames, at what rate, at what size.

Timeline. The video is resampled to `clips.fps` (or kept at its own rate): sampled frame j is
source frame floor(j * src_fps / fps) (nearest earlier frame; frames repeat when upsampling).
Clip c holds sampled frames [c*stride, c*stride + num_frames); only clips that fit entirely in
the video are cut, at most `max_clips_per_video`. Both decoders follow the same plan, so the
backend changes pixels only slightly, never which frames are taken.

Size. Each frame is scaled so its shorter side fills the target (aspect kept), then centre
cropped to `clips.resolution` = (H, W). Frames stay uint8 channels-last [T, H, W, 3]; the
conversion to float [-1, 1] happens at the tokenizer boundary, not here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.readers.decode import Media, VideoError, VideoInfo, frame_reader, probe
from schemas.jobspec import ClipSpec, LimitSpec

_EPS = 1e-6  # guards floor() against float error on exact multiples (30000/1001 fps and such)


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


def center_crop(frames: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """frames: uint8 [..., h, w, 3] -> [..., H, W, 3], centred (a view, no copy)."""
    out_h, out_w = out_hw
    h, w = frames.shape[-3], frames.shape[-2]
    top, left = (h - out_h) // 2, (w - out_w) // 2
    return frames[..., top : top + out_h, left : left + out_w, :]


@dataclass
class DecodedClip:
    index: int
    start_frame: int  # first frame on the sampled timeline
    fps: float
    frames: np.ndarray  # uint8 [T, H, W, 3]


@dataclass
class VideoDone:
    """Sent after a video's last clip: what was seen, for stats."""

    clips: int
    frames_decoded: int  # source frames delivered by the decoder (wanted ones)
    duration: float  # seconds of video, from the container or the frames seen


def cut_clips(data: Media, spec: ClipSpec, limits: LimitSpec | None = None) -> Iterator[DecodedClip | VideoDone]:
    """Decode `data` and yield its clips in order, then one VideoDone. Raises VideoError."""
    limits = limits or LimitSpec()
    info = probe(data, limits.max_frame_pixels)
    plan = ClipPlan.build(spec, info)
    wanted = frame_budget(plan, limits.max_frames)
    size = scaled_size(info.width, info.height, spec.resolution)
    reader = frame_reader(spec.decoder)
    window: dict[int, np.ndarray] = {}  # sampled index -> cropped frame [H, W, 3], pending clips only
    emitted, delivered, last_src = 0, 0, -1
    src_to_js = _sampled_of(plan)
    for src, frame in reader(data, info, wanted, size, spec.decoder_threads):
        delivered += 1
        last_src = src
        cropped = center_crop(frame, spec.resolution)
        for j in src_to_js(src):
            window[j] = cropped
            for c in plan.clips_of(j):
                if j == c * plan.stride + plan.num_frames - 1:
                    start = c * plan.stride
                    clip = np.stack([window[k] for k in range(start, j + 1)])  # clip: [T, H, W, 3]
                    yield DecodedClip(c, start, plan.fps, clip)
                    emitted += 1
                    for k in [k for k in window if k < start + plan.stride]:
                        del window[k]
    if delivered == 0:
        raise VideoError("decode", "NoFrames", "the decoder produced no frames")
    duration = info.duration or (last_src + 1) / info.fps
    yield VideoDone(emitted, delivered, duration)


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
