"""Build the held-out-by-source evaluation shards: scikit-image's sample photos under a
synthetic camera, in several codecs and aspect ratios.

    python scripts/make_eval_data.py [--out data/eval] [--tiny]

scikit-image's photos are reserved for evaluation: no training data of this repo comes from
them (scripts/make_train_data.py draws on other sources), so a score here is a score on
content the tokenizer has never seen. Every photo becomes one 17-frame clip per codec (H.264
for all, VP9 and HEVC alternating for the second copy), each with its own camera path and
frame size (landscape, portrait, wide), so `tokenmill eval` at 17x256x256 scores one clip per
video. Offline; the frames are deterministic (the H.264 bytes vary slightly between runs, see
scripts/synthetic_video.py). --tiny writes 2 photos at 64x48, 9 frames, for the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_video import MOTIONS, Sample, encode, even, render, write_shards  # noqa: E402

# (skimage.data name, camera path, output size W x H, what it is)
PHOTOS = [
    ("astronaut", "zoom", (384, 256), "portrait photo of an astronaut, flag and space shuttle model"),
    ("coffee", "pan", (448, 256), "cup of coffee on a saucer, wooden table"),
    ("chelsea", "rotate", (256, 384), "a tabby cat, close up (portrait frame)"),
    ("rocket", "tilt", (256, 352), "a rocket on its launch pad, sky (portrait frame)"),
    ("stereo_motorcycle", "handheld", (480, 270), "a motorcycle in a workshop, cluttered background"),
    ("retina", "zoom", (320, 320), "fundus photograph of a retina"),
    ("hubble_deep_field", "pan", (400, 272), "Hubble deep field: galaxies on black"),
    ("immunohistochemistry", "rotate", (320, 240), "immunohistochemistry microscopy, stained tissue"),
    ("camera", "handheld", (272, 400), "a cameraman on a field (greyscale, portrait frame)"),
    ("coins", "pan", (352, 256), "old coins on a dark background (greyscale)"),
]
# AV1 (libsvtav1) encodes here, but decord, the data plane's default decoder, cannot read it
SECOND_CODECS = ("vp9", "hevc")


def load_photo(name: str) -> Image.Image:
    from skimage import data

    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo pairs: the left view
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return Image.fromarray(image[..., :3].astype(np.uint8))


def samples(tiny: bool) -> list[Sample]:
    photos = PHOTOS[:2] if tiny else PHOTOS
    frames = 9 if tiny else 17
    out: list[Sample] = []
    for index, (name, motion, size, caption) in enumerate(photos):
        image = load_photo(name)
        size = (64, 48) if tiny else even(size)
        video = render(image.convert("RGB"), size, frames, MOTIONS[motion])
        for codec in ("h264", SECOND_CODECS[index % 2]):
            meta = {"caption": caption, "source": f"scikit-image/data.{name}", "motion": motion, "codec": codec,
                    "width": size[0], "height": size[1], "frames": frames, "fps": 24, "split": "eval"}
            out.append(Sample(f"{name}_{motion}_{codec}", codec, encode(video, codec), meta))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "eval"))
    parser.add_argument("--tiny", action="store_true", help="2 photos at 64x48, 9 frames (tests)")
    args = parser.parse_args()
    for path in write_shards(samples(args.tiny), Path(args.out), per_shard=4):
        print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
