"""`tokenmill run` with native aspect ratios, shot cuts, the motion filter and sampled quality, end to end.

One job over a shard of real sources (portrait, 16:9, a hard cut made by joining two clips, a
still video) on an embedded Ray; its sampled PSNR is checked against `tokenmill eval` on the
same clips.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import tokenizer_core
from jobs.shard_task import quality_sampled
from tests.fixtures.media import encode_frames, real_frames, write_tar
from tests.jobs_helpers import REPO, cli_env, read_summary, run_cli
from tests.tokenizer_support import spread_tokenizer

JOIN = 30


@pytest.fixture(scope="module")
def job(tmp_path_factory, real_videos):
    """(output, shard, checkpoint, completed `tokenmill run`) of one job over the native-shape shard."""
    tmp = tmp_path_factory.mktemp("native")
    joined = np.concatenate([real_frames(real_videos["carphone_pristine"], JOIN, 96, 64),
                             real_frames(real_videos["bigbuckbunny"], 40, 96, 64, start=40)])
    still = np.repeat(real_frames(real_videos["carphone_pristine"], 1, 96, 64), 20, axis=0)
    shard = write_tar(tmp / "native-000000.tar", [
        ("cut.mp4", encode_frames(joined, 96, 64)),
        ("portrait.mp4", encode_frames(real_frames(real_videos["bigbuckbunny"], 20, 72, 128), 72, 128)),
        ("wide.mp4", encode_frames(real_frames(real_videos["bikes"], 20, 128, 72), 128, 72)),
        ("still.mp4", encode_frames(still, 96, 64)),
    ])
    checkpoint = tmp / "spread.pt"
    tokenizer_core.save_checkpoint(spread_tokenizer("DV4x8x8-tiny"), str(checkpoint))
    spec = tmp / "job.yaml"
    spec.write_text(json.dumps({
        "name": "native", "input": {"shards": str(shard)},
        "clips": {"num_frames": 9, "resolution": {"short_side": 32}, "split_scenes": True, "min_motion": 0.5},
        "quality": {"sample_rate": 1.0},
        "tokenizer": {"name": str(checkpoint), "batch_size": 2},
        "output": {"uri": str(tmp / "out")},
    }))
    proc = run_cli(tmp / "out", spec=spec)
    return tmp / "out", shard, checkpoint, proc


def _rows(out: Path) -> list[dict]:
    (path,) = (out / "tokens").glob("*.parquet")
    return pq.read_table(path).drop(["tokens"]).to_pylist()


def test_job_keeps_aspect_splits_at_the_cut_and_drops_the_still_video(job):
    out, _, _, proc = job
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    shapes = {r["sample_key"]: (r["height"], r["width"]) for r in rows}
    assert shapes == {"cut": (32, 48), "portrait": (56, 32), "wide": (32, 56)}  # 32 x 56.9 -> 56
    cut = [r for r in rows if r["sample_key"] == "cut"]
    assert all(r["start_frame"] + 9 <= JOIN or r["start_frame"] >= JOIN for r in cut)
    assert {r["scene_start"] for r in cut} == {0, JOIN}
    summary = read_summary(out)
    assert summary["notes_by_reason"] == {"low_motion": 2} and summary["scene_cuts"] >= 1
    assert summary["samples_total"] == summary["samples_ok"] + summary["samples_failed"] == 4
    assert summary["clips_written"] == len(rows) and all(r["motion"] >= 0.5 for r in rows)


def test_sampled_psnr_equals_tokenmill_eval_on_the_same_clip(job):
    """quality.sample_rate 1: every row has PSNR/SSIM; the shot before the cut gives the same clips
    as `tokenmill eval --resolution 32 48`, and the same scores."""
    out, shard, checkpoint, proc = job
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = subprocess.run([sys.executable, "-m", "jobs.cli", "eval", "--tokenizer", str(checkpoint), "--shards",
                         str(shard), "--num-frames", "9", "--resolution", "32", "48", "--json"],
                        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-3000:]
    scored = {c["key"]: c for c in json.loads(ev.stdout)["per_clip"]}
    rows = {r["key"]: r for r in _rows(out)}
    same = [k for k, r in rows.items() if r["sample_key"] == "cut" and r["start_frame"] + 9 <= JOIN]
    assert len(same) == 3
    for key in same:
        assert rows[key]["psnr"] == pytest.approx(scored[key]["psnr"], abs=1e-3)
        assert rows[key]["ssim"] == pytest.approx(scored[key]["ssim"], abs=1e-3)
    quality = read_summary(out)["quality"]
    psnrs = [r["psnr"] for r in rows.values()]
    assert quality["clips"] == len(rows)
    assert quality["psnr_mean"] == pytest.approx(np.mean(psnrs), abs=1e-3)
    assert quality["psnr_p5"] == pytest.approx(np.percentile(psnrs, 5), abs=1e-3)
    status = subprocess.run([sys.executable, "-m", "jobs.cli", "status", str(out)], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert f"psnr {quality['psnr_mean']:.2f} dB mean" in status.stdout
    assert f"| sampled PSNR (mean / p5) | {quality['psnr_mean']:.2f}" in (out / "README.md").read_text()


def test_quality_sample_is_a_deterministic_fraction_by_key():
    keys = [f"shard-0.sample{i}.0000" for i in range(2000)]
    picked = [k for k in keys if quality_sampled(k, 0.1)]
    assert 150 < len(picked) < 250 and picked == [k for k in keys if quality_sampled(k, 0.1)]
    assert not any(quality_sampled(k, 0.0) for k in keys) and all(quality_sampled(k, 1.0) for k in keys)
