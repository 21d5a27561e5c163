"""Build the held-out-by-source evaluation shards: scikit-image's sample photos under a
synthetic camera, in several codecs and aspect ratios.

    python scripts/make_eval_data.py [--out data/eval] [--tiny]
    python scripts/make_eval_data.py --set val [--out data/val]

scikit-image's photos are reserved for evaluation: no training data of this repo comes from
them (scripts/make_train_data.py draws on other sources), so a score here is a score on
content the tokenizer has never seen. Every photo becomes one 17-frame clip per codec (H.264
for all, VP9 and HEVC alternating for the second copy), each with its own camera path and
frame size (landscape, portrait, wide), so `tokenmill eval` at 17x256x256 scores one clip per
video. Offline; the frames are deterministic (the H.264 bytes vary slightly between runs, see
scripts/synthetic_video.py). --tiny writes 2 photos at 64x48, 9 frames, for the tests.

`--set val` builds the validation set the same way from other sources: the "val" photos of
scripts/package_media.py (sample pictures that gradio, ultralytics, insightface, mahotas and
imagecorruptions ship), used in no training data
either. It is what chooses between checkpoints, so the evaluation set is scored once, at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import package_media  # noqa: E402
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
# validation: (scripts/package_media.py name, camera path, output size W x H)
VAL_PHOTOS = [
    ("gradio_cheetah", "pan", (448, 256)),
    ("gradio_cheetah_cub", "zoom", (320, 320)),
    ("gradio_tower", "tilt", (256, 384)),
    ("ultralytics_zidane", "handheld", (480, 270)),
    ("insightface_t1", "rotate", (448, 304)),
    ("mahotas_luispedro", "zoom", (256, 336)),
    ("imagecorruptions_frost_blue", "pan", (400, 272)),
    ("imagecorruptions_frost_grey", "handheld", (320, 320)),
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


def pictures(which: str, tiny: bool) -> list[tuple[str, Image.Image, str, tuple[int, int], str, str]]:
    """(name, image, motion, size, caption, source) of the evaluation or the validation set."""
    if which == "val":
        media = {m.name: m for m in package_media.split("val")}
        return [(name, package_media.read_image(media[name]), motion, size, media[name].caption,
                 f"{media[name].requirement}:{media[name].member}") for name, motion, size in VAL_PHOTOS]
    return [(name, load_photo(name), motion, size, caption, f"scikit-image/data.{name}")
            for name, motion, size, caption in (PHOTOS[:2] if tiny else PHOTOS)]


def samples(which: str, tiny: bool) -> list[Sample]:
    frames = 9 if tiny else 17
    out: list[Sample] = []
    for index, (name, image, motion, size, caption, source) in enumerate(pictures(which, tiny)):
        size = (64, 48) if tiny else even(size)
        video = render(image.convert("RGB"), size, frames, MOTIONS[motion])
        for codec in ("h264", SECOND_CODECS[index % 2]):
            meta = {"caption": caption, "source": source, "motion": motion, "codec": codec,
                    "width": size[0], "height": size[1], "frames": frames, "fps": 24, "split": which}
            out.append(Sample(f"{name}_{motion}_{codec}", codec, encode(video, codec), meta))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="which", choices=("eval", "val"), default="eval",
                        help="eval: scikit-image's photos (held out by source); val: the validation photos")
    parser.add_argument("--out", default=None, help="default: data/eval or data/val")
    parser.add_argument("--tiny", action="store_true", help="2 photos at 64x48, 9 frames (tests)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(__file__).resolve().parents[1] / "data" / args.which
    for path in write_shards(samples(args.which, args.tiny), out, per_shard=4):
        print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
