"""Video decoding: probe a video's bytes, then decode only the frames a clip plan needs.

Two backends behind one function shape, chosen by `clips.decoder`:

    iter_frames(data, info, wanted, size, threads) -> Iterator[(source_index, frame uint8 [h, w, 3])]

`data` is a `Media`: the member's bytes, or the path of the temporary file a large member was
spooled to (pipeline.readers.tar_stream). FFmpeg may only pick a demuxer from `CONTAINERS`, and
a member whose first bytes are text is refused before any demuxer sees it: playlists and
manifests (hls, concat, dash, sdp) open the files or sockets named inside them, which would let
a hostile sample read local files or reach the network (docs/threat-model.md).

`wanted` is an increasing iterator of source frame indices; frames in between are decoded (a
codec needs them) but never converted to RGB, which is where most of the per-frame cost is.
`size` = (width, height) of the output: scaling happens inside swscale during the colour
conversion (area averaging for downscales, i.e. antialiased), so a 4K frame is never held as
full-size RGB. `threads` (clips.decoder_threads) is the codec's thread count; the shard task
reserves that many CPUs. Probing always uses PyAV so that both backends see the same rate,
frame count and classification of bad input.

Errors are `VideoError(stage, error_type, message)`: the caller turns them into dead letters.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# frame sizes outside these bounds are refused before decoding ("absurd dimensions"): below
# MIN_SIDE decoders misbehave (decord returns garbage strides), above MAX_SIDE (8K DCI is 8192)
# or past MAX_ASPECT a resize to the clip resolution would need unbounded memory
MIN_SIDE = 16
MAX_SIDE = 8192
MAX_ASPECT = 16.0
SEEK_GAP = 32  # decord: frames to skip before a keyframe seek is considered
MAX_FPS = 240.0  # above this a container's average rate is taken to be a broken timeline
DEFAULT_MAX_PIXELS = 8192 * 4320  # limits.max_frame_pixels
# demuxers (FFmpeg names) allowed to open a member: containers and elementary video streams
CONTAINERS = "mov,matroska,avi,mpegts,flv,asf,ogg,mpeg,mpegvideo,yuv4mpegpipe,h264,hevc,m4v"
TEXT_HEAD = 64  # bytes that must not all be text
_TEXT_BYTES = frozenset(range(32, 127)) | frozenset(b"\t\r\n")

Media = bytes | str  # a member's bytes, or the path of the file it was spooled to


class VideoError(Exception):
    """A sample's video cannot be turned into clips; `stage`/`error_type` become the dead letter."""

    def __init__(self, stage: str, error_type: str, message: str):
        self.stage = stage
        self.error_type = error_type
        super().__init__(message)


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    num_frames: int | None  # from the container; None when it does not say (e.g. WebM)
    duration: float | None  # seconds
    codec: str
    max_pixels: int = DEFAULT_MAX_PIXELS  # the width x height bound every frame is held to


def _av_error_types() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, UnicodeDecodeError)


def _check_dimensions(width: int, height: int, max_pixels: int) -> None:
    lo, hi = min(width, height), max(width, height)
    if lo < MIN_SIDE or hi > MAX_SIDE or hi / lo > MAX_ASPECT:
        raise VideoError("decode", "AbsurdDimensions",
                         f"frame size {width}x{height} is outside {MIN_SIDE}..{MAX_SIDE} px "
                         f"or aspect ratio {MAX_ASPECT}")
    if width * height > max_pixels:
        raise VideoError("decode", "FrameTooLarge",
                         f"frame size {width}x{height} is over limits.max_frame_pixels ({max_pixels})")


def _check_head(data: Media) -> None:
    if isinstance(data, bytes):
        head = data[:TEXT_HEAD]
    else:
        with open(data, "rb") as fh:
            head = fh.read(TEXT_HEAD)
    if head and not head.startswith(b"YUV4MPEG2 ") and _TEXT_BYTES.issuperset(head):
        raise VideoError("decode", "NotAContainer",
                         "the member starts with text (a playlist or manifest?), not a video container")


def _open(data: Media) -> Any:
    import av

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    return av.open(source, mode="r", container_options={"format_whitelist": CONTAINERS})


def _frame_rate(stream) -> float:
    """Average rate from the timestamps, unless they are broken (muxers that leave every pts at 0
    report thousands of fps); then the codec's nominal rate. 0.0 when neither is plausible."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate and 0 < float(rate) <= MAX_FPS:
            return float(rate)
    return 0.0


def probe(data: Media, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Container facts of the first video stream; VideoError for anything that cannot be decoded."""
    if not data:
        raise VideoError("read", "EmptyFile", "video member has zero bytes")
    _check_head(data)
    try:
        with _open(data) as container:
            if not container.streams.video:
                raise VideoError("decode", "NoVideoStream", "the file has no video stream (audio only?)")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if ctx is None or not ctx.name:
                raise VideoError("decode", "UnsupportedCodec", "no decoder knows the video stream's codec")
            width, height = ctx.width, ctx.height
            fps = _frame_rate(stream)
            frames = stream.frames or None
            duration = frames / fps if frames and fps else None
            if duration is None and container.duration:
                duration = container.duration / 1_000_000
            info = VideoInfo(width, height, fps, frames, duration, ctx.name, max_pixels)
    except _av_error_types() as exc:
        raise VideoError("decode", "InvalidData", f"cannot open video: {exc}") from None
    _check_dimensions(info.width, info.height, max_pixels)
    if not info.fps:
        raise VideoError("decode", "UnknownFrameRate", "neither the timestamps nor the codec give a usable frame rate")
    return info


def pyav_frames(data: Media, info: VideoInfo, wanted: Iterable[int], size: tuple[int, int],
                threads: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """PyAV backend: sequential decode (`threads` codec threads), RGB + resize only for wanted frames.

    Scaling is two swscale passes with reused contexts: area-average in YUV 4:2:0 down to the
    output size (SIMD paths), then an unscaled YUV->RGB conversion of the small frame. One
    scaled YUV->RGB pass runs swscale's slow generic path, and `frame.reformat` rebuilds its
    context (filter tables) on every call: together ~1.5x slower here (docs/data.md).
    """
    from av.video.reformatter import VideoReformatter

    scale, to_rgb = VideoReformatter(), VideoReformatter()
    want = iter(wanted)
    target = next(want, None)
    try:
        with _open(data) as container:
            stream = container.streams.video[0]
            if threads > 1:
                stream.thread_type = "AUTO"  # frame and slice threads, as many as the task reserved
                stream.thread_count = threads
            else:
                stream.thread_type = "NONE"  # one core per worker: parallelism comes from processes
            for index, frame in enumerate(container.decode(stream)):
                if target is None:
                    return
                if index < target:
                    continue
                _check_frame_size(frame.width, frame.height, info)
                small = scale.reformat(frame, width=size[0], height=size[1], format="yuv420p",
                                       interpolation="AREA")
                out = to_rgb.reformat(small, format="rgb24").to_ndarray()  # out: [h, w, 3]
                while target is not None and target <= index:
                    yield index, out
                    target = next(want, None)
    except _av_error_types() as exc:
        raise VideoError("decode", "DecodeError", f"pyav: {exc}") from None


def _check_frame_size(width: int, height: int, info: VideoInfo) -> None:
    # a stream may change resolution mid-way; the probe's bounds must hold for every frame
    if (width, height) != (info.width, info.height):
        _check_dimensions(width, height, info.max_pixels)


class _Bytes:
    """decord copies whatever `.read()` returns; this avoids an extra BytesIO copy."""

    def __init__(self, data: bytes):
        self._data = data

    def read(self) -> bytes:
        return self._data


def decord_frames(data: Media, info: VideoInfo, wanted: Iterable[int], size: tuple[int, int],
                  threads: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """decord backend (`threads` decoder threads): next() for wanted frames; across a gap, seek when a keyframe
    lies inside it (decoding restarts there), else skip_frames (decoded, never converted)."""
    import decord

    try:
        source = _Bytes(data) if isinstance(data, bytes) else data
        reader = decord.VideoReader(source, ctx=decord.cpu(0), width=size[0], height=size[1],
                                    num_threads=threads)
        total, position = len(reader), 0
        keys: list[int] | None = None
        for target in wanted:
            if target >= total:
                return
            if target >= position:
                if target - position > SEEK_GAP:
                    keys = keys if keys is not None else sorted(int(k) for k in reader.get_key_indices())
                    if keys[bisect.bisect_right(keys, target) - 1] > position:
                        reader.seek_accurate(target)
                        position = target
                if target > position:
                    reader.skip_frames(target - position)
                frame = reader.next().asnumpy()
                position = target + 1
                if frame.shape != (size[1], size[0], 3):
                    raise VideoError("decode", "DecodeError", f"decord returned a frame of shape {frame.shape}")
            yield target, frame
    except StopIteration:
        return
    except (decord.DECORDError, RuntimeError) as exc:
        raise VideoError("decode", "DecodeError", f"decord: {str(exc).splitlines()[0][:300]}") from None


FrameReader = Callable[[Media, VideoInfo, Iterable[int], tuple[int, int], int], Iterator[tuple[int, np.ndarray]]]
BACKENDS: dict[str, FrameReader] = {"pyav": pyav_frames, "decord": decord_frames}


def frame_reader(name: str) -> FrameReader:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"clips.decoder: unknown decoder {name!r} (choose from {sorted(BACKENDS)})") from None
