"""scripts/package_media.py: photos read out of wheels on the package index, split by source."""

from __future__ import annotations

import io
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import make_eval_data  # noqa: E402
import package_media  # noqa: E402


def test_validation_sources_are_never_training_sources():
    train = {(m.requirement, m.member) for m in package_media.split("train")}
    val = {(m.requirement, m.member) for m in package_media.split("val")}
    assert train and val and not train & val
    assert {m.split for m in package_media.MEDIA} == {"train", "val"}
    assert {name for name, *_ in make_eval_data.VAL_PHOTOS} == {m.name for m in package_media.split("val")}
    # the evaluation set (scikit-image) is a third source: no package photo comes from it
    assert not any("skimage" in m.member or "scikit-image" in m.requirement for m in package_media.MEDIA)


def test_reads_members_out_of_a_cached_wheel_without_downloading(tmp_path):
    photo = np.zeros((6, 8, 3), np.uint8)
    photo[:, :4] = (255, 40, 0)
    jpeg, grey, colour = io.BytesIO(), io.BytesIO(), io.BytesIO()
    Image.fromarray(photo).save(jpeg, format="PNG")
    np.savez(grey, data=np.full((4, 5), 77, np.uint8))
    np.save(colour, photo)
    media = replace(package_media.MEDIA[0], wheel="demo-1.0-py3-none-any.whl", requirement="demo==1.0",
                    member="demo/photo.png")
    with zipfile.ZipFile(tmp_path / media.wheel, "w") as wheel:
        wheel.writestr("demo/photo.png", jpeg.getvalue())
        wheel.writestr("demo/grey.npz", grey.getvalue())
        wheel.writestr("demo/colour.npy", colour.getvalue())
    image = package_media.read_image(media, tmp_path)
    assert image.size == (8, 6) and image.getpixel((0, 0)) == (255, 40, 0)
    npz = package_media.read_image(replace(media, member="demo/grey.npz"), tmp_path)
    assert npz.mode == "RGB" and npz.size == (5, 4) and npz.getpixel((0, 0)) == (77, 77, 77)
    npy = package_media.read_image(replace(media, member="demo/colour.npy"), tmp_path)
    assert npy.size == (8, 6) and npy.getpixel((0, 0)) == (255, 40, 0) and npy.getpixel((7, 0)) == (0, 0, 0)


def test_a_wheel_that_cannot_be_downloaded_says_which(tmp_path):
    media = replace(package_media.MEDIA[0], wheel="tokenmill_absent-0.0.1-py3-none-any.whl",
                    requirement="tokenmill-absent-package==0.0.1")
    with pytest.raises(SystemExit, match="could not download tokenmill-absent-package==0.0.1"):
        package_media.read_bytes(media, tmp_path)
