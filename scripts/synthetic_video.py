"""Shared by scripts/make_eval_data.py and scripts/make_train_data.py: still images turned into
short videos under a synthetic camera (pan, zoom, rotation, parallax layers), encoded with PyAV,
and WebDataset shards of them.

A camera path is a function of t in [0, 1] giving the view centre (in image pixels), a zoom
factor and an angle; each frame is one affine resampling (PIL, bicubic) of the source image, so
every frame is sharp and the motion is sub-pixel smooth, as in real footage of a still scene.
The frames are deterministic (no random state outside the numpy Generators the callers seed),
and so are the encoded files. libx264's assembly paths are not: with them, the same frames
encoded twice in one process gave 2-3 different files at some sizes (448x256, 288x384: up to 79
grey levels apart after decoding, thread_count 1 or not), likely what sent two training
runs on two builds of data/train apart. So H.264 is encoded with `asm=0`: 12 of 12 encodes
identical, at 1.8x the encode time (0.67 s against 0.38 s for 33 frames at 448x256).
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole config per file otherwise

# (PyAV encoder, container format, file extension, encoder options)
CODECS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "h264": ("libx264", "mp4", "mp4", {"crf": "20", "preset": "veryfast", "x264-params": "asm=0"}),
    "hevc": ("libx265", "mp4", "mp4", {"crf": "24", "preset": "veryfast", "x265-params": "log-level=error"}),
    "vp9": ("libvpx-vp9", "webm", "webm", {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
    "av1": ("libsvtav1", "matroska", "mkv", {"crf": "35", "preset": "12"}),
}


@dataclass(frozen=True)
class Camera:
    """A camera path over a still: centre moves by `pan` (fraction of the view), zoom goes from
    zoom[0] to zoom[1], angle from angle[0] to angle[1] degrees; `wobble` adds a hand-held sway."""

    pan: tuple[float, float] = (0.0, 0.0)
    zoom: tuple[float, float] = (1.0, 1.0)
    angle: tuple[float, float] = (0.0, 0.0)
    wobble: float = 0.0

    def at(self, t: float) -> tuple[float, float, float, float]:
        """(dx, dy as fractions of the view, zoom, angle in degrees) at time t in [0, 1]."""
        sway = self.wobble * math.sin(2 * math.pi * 1.3 * t)
        return (self.pan[0] * (t - 0.5) + sway, self.pan[1] * (t - 0.5) + 0.5 * sway,
                self.zoom[0] + (self.zoom[1] - self.zoom[0]) * t, self.angle[0] + (self.angle[1] - self.angle[0]) * t)


MOTIONS = {
    "pan": Camera(pan=(0.35, 0.08)),
    "tilt": Camera(pan=(-0.05, 0.3)),
    "zoom": Camera(zoom=(1.0, 1.35)),
    "rotate": Camera(angle=(-6.0, 6.0)),
    "handheld": Camera(pan=(0.12, -0.06), zoom=(1.05, 1.15), angle=(2.0, -2.0), wobble=0.03),
}


def view_fit(image_size: tuple[int, int], out_size: tuple[int, int], camera: Camera) -> float:
    """Source pixels per output pixel such that the whole path stays inside the image."""
    (iw, ih), (ow, oh) = image_size, out_size
    worst = 0.0
    for t in np.linspace(0, 1, 9):
        dx, dy, zoom, angle = camera.at(float(t))
        a = math.radians(angle)
        # half extent of the rotated view (in output pixels / zoom) plus the pan offset
        hx = (abs(math.cos(a)) * ow + abs(math.sin(a)) * oh) / 2 / zoom + abs(dx) * ow
        hy = (abs(math.sin(a)) * ow + abs(math.cos(a)) * oh) / 2 / zoom + abs(dy) * oh
        worst = max(worst, hx / (iw / 2), hy / (ih / 2))
    return 0.98 / worst


def render(image: Image.Image, out_size: tuple[int, int], frames: int, camera: Camera) -> list[np.ndarray]:
    """`frames` frames [H, W, C] (C of the image's mode: 3 for RGB, 4 for RGBA) of `image` seen
    through `camera`, uint8."""
    ow, oh = out_size
    scale = view_fit(image.size, out_size, camera)
    out = []
    for i in range(frames):
        dx, dy, zoom, angle = camera.at(i / max(1, frames - 1))
        k, a = scale / zoom, math.radians(angle)
        cx, cy = image.size[0] / 2 + dx * ow * scale, image.size[1] / 2 + dy * oh * scale
        # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f)
        ca, cb, cd, ce = k * math.cos(a), -k * math.sin(a), k * math.sin(a), k * math.cos(a)
        coeffs = (ca, cb, cx - ca * ow / 2 - cb * oh / 2, cd, ce, cy - cd * ow / 2 - ce * oh / 2)
        out.append(np.asarray(image.transform((ow, oh), Image.Transform.AFFINE, coeffs,
                                              resample=Image.Resampling.BICUBIC)))
    return out


def render_parallax(back: Image.Image, front: Image.Image, mask: np.ndarray, out_size: tuple[int, int],
                    frames: int, back_camera: Camera, front_camera: Camera) -> list[np.ndarray]:
    """A foreground layer (front where mask, [H, W] float in [0, 1], same size as front) moving
    over a background with its own camera: depth-dependent motion with occlusion, as a
    translating camera sees a near object against a far scene."""
    rgba = front.convert("RGB")
    rgba.putalpha(Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8)))
    out = []
    for b, f in zip(render(back.convert("RGB"), out_size, frames, back_camera),
                    render(rgba, out_size, frames, front_camera), strict=True):
        a = f[..., 3:4].astype(np.float32) / 255
        out.append((f[..., :3] * a + b * (1 - a)).round().astype(np.uint8))
    return out


def encode(frames: list[np.ndarray], codec: str, fps: int = 24) -> bytes:
    """Frames (uint8 [H, W, 3], even sizes) as one video file in `codec` (a key of CODECS)."""
    encoder, fmt, _, options = CODECS[codec]
    height, width = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(encoder, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(options)
        stream.thread_count = 1
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


@dataclass
class Sample:
    key: str  # WebDataset key: no dots
    codec: str
    video: bytes
    meta: dict


def write_shards(samples: Iterable[Sample], out_dir: Path, per_shard: int, prefix: str = "shards") -> list[Path]:
    """WebDataset tars `<prefix>-000000.tar`, ... of `per_shard` samples each (`<key>.<ext>` +
    `<key>.json`), written to a temporary name and renamed; members have mtime 0 (reproducible).
    `<prefix>-*.tar` files of an earlier, larger build are removed, so a glob over the folder
    reads this build only."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    batch: list[Sample] = []

    def flush() -> None:
        path = out_dir / f"{prefix}-{len(paths):06d}.tar"
        tmp = path.with_suffix(".tar.tmp")
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for s in batch:
                _add(tar, f"{s.key}.{CODECS[s.codec][2]}", s.video)
                _add(tar, f"{s.key}.json", json.dumps(s.meta, sort_keys=True).encode())
        tmp.rename(path)
        paths.append(path)
        batch.clear()

    for sample in samples:
        batch.append(sample)
        if len(batch) == per_shard:
            flush()
    if batch:
        flush()
    for stale in sorted(set(out_dir.glob(f"{prefix}-*.tar")) - set(paths)):
        stale.unlink()
    return paths


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mtime = len(data), 0
    tar.addfile(member, io.BytesIO(data))


def even(size: tuple[int, int]) -> tuple[int, int]:
    return (size[0] - size[0] % 2, size[1] - size[1] % 2)

