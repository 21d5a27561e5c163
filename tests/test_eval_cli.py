"""`tokenmill eval` on real shards: JSON fields, per-clip scores, baseline and exact-reconstruction cases."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import tokenizer_core
from jobs.cli import main
from pipeline.tokenizer_tools.evaluate import evaluate, iter_eval_clips
from tokenizer_core import metrics

SHARD = "shards-000001.tar"


@pytest.fixture(scope="module")
def shard(sample_shards):
    return next(s for s in sample_shards if s.name == SHARD)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tiny.pt"
    tokenizer_core.save_checkpoint(tokenizer_core.from_pretrained("DV4x8x8-tiny", init="random"), path)
    return path


class IdentityTokenizer:
    """Keeps every pixel: a stand-in for a perfect tokenizer (the scorer is under test, not it)."""

    config = SimpleNamespace(name="identity", temporal_compression=4, spatial_compression=8)
    device, dtype = torch.device("cpu"), torch.float32

    def encode(self, video):
        return video

    def decode(self, codes):
        return codes


def test_exact_reconstruction_scores_the_cap(shard):
    result = evaluate(IdentityTokenizer(), iter_eval_clips(str(shard), 9, (64, 64)), max_clips=2)
    assert result["clips"] == 2
    assert result["psnr"] == metrics.PSNR_CAP and result["ssim"] == pytest.approx(1.0)
    assert result["baseline_psnr"] < 40


def test_eval_json_matches_independent_scoring(shard, tiny_checkpoint, capsys):
    code = main(["eval", "--tokenizer", str(tiny_checkpoint), "--shards", str(shard), "--num-frames", "9",
                 "--resolution", "64", "64", "--max-clips", "3", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for field in ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "clips", "per_clip"):
        assert field in result
    assert result["clips"] == 3 == len(result["per_clip"])
    # the baseline of the first clip, recomputed here from the same data plane
    clip = next(iter_eval_clips(str(shard), 9, (64, 64)))
    original = metrics.from_uint8_frames(torch.from_numpy(clip.frames))
    expected = metrics.psnr(original, metrics.same_grid_baseline(original, 4, 8))
    assert result["per_clip"][0]["key"] == clip.key
    assert result["per_clip"][0]["baseline_psnr"] == pytest.approx(expected, abs=1e-3)
    # a random tokenizer reconstructs nothing: far below the baseline
    assert result["psnr"] < result["baseline_psnr"]
    means = sum(r["psnr"] for r in result["per_clip"]) / 3
    assert result["psnr"] == pytest.approx(means, abs=1e-3)


def test_eval_rejects_a_resolution_off_the_grid(shard, tiny_checkpoint, capsys):
    code = main(["eval", "--tokenizer", str(tiny_checkpoint), "--shards", str(shard),
                 "--num-frames", "9", "--resolution", "60", "64"])
    assert code == 2
    assert "--resolution" in capsys.readouterr().err


def test_eval_refine_steps_scores_the_refined_tokens(shard, tmp_path, capsys):
    """--refine-steps: the bundled model's refined round trip of real clips scores above its plain
    one, clip by clip; a continuous tokenizer is refused naming the flag."""
    args = ["eval", "--tokenizer", "DV4x8x8-mill", "--shards", str(shard), "--num-frames", "5",
            "--resolution", "64", "64", "--max-clips", "2", "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--refine-steps", "6"]) == 0
    refined = json.loads(capsys.readouterr().out)
    assert plain["refine_steps"] == 0 and refined["refine_steps"] == 6
    for before, after in zip(plain["per_clip"], refined["per_clip"], strict=True):
        assert after["key"] == before["key"] and after["psnr"] > before["psnr"] + 0.1
        assert after["baseline_psnr"] == before["baseline_psnr"]
    continuous = tmp_path / "cv.pt"
    tokenizer_core.save_checkpoint(tokenizer_core.from_pretrained("CV4x8x8-tiny", init="random"), str(continuous))
    assert main(["eval", "--tokenizer", str(continuous), "--shards", str(shard), "--refine-steps", "2"]) == 2
    assert "--refine-steps" in capsys.readouterr().err
