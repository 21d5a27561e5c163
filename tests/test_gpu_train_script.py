"""scripts/gpu_train.sh, the bundled tokenizer's GPU training call, rehearsed on CPU.

The device machine has no Ray, decord, webdataset or S3 libraries (pydantic, braceexpand and
PyAV travel as wheels, scripts/prepare_gpu_train.sh): a sitecustomize makes those imports fail, so
the training, the export and the checks must run without them. One step on one real clip stands
in for the device's minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tokenizer_core
from schemas.training import load_train_config
from tests.fixtures.absent import MESSAGE, site_without

REPO = Path(__file__).resolve().parents[1]
ABSENT_ON_THE_GPU_MACHINE = ["ray", "decord", "webdataset", "s3fs", "moto", "boto3", "botocore"]


def test_gpu_config_continues_stage_three_on_its_data_and_loss():
    gpu = load_train_config(str(REPO / "examples" / "train_bundled_gpu.yaml"), [])
    broad = load_train_config(str(REPO / "examples" / "train_bundled_broad.yaml"), [])
    assert gpu.data.shards == [*broad.data.shards, str(REPO / "data/train/packages-*.tar")] and gpu.loss == broad.loss
    assert (gpu.model.name, gpu.model.init, gpu.device) == ("DV4x8x8-mill", "pretrained", "auto")
    assert gpu.export is not None and "bundled" not in gpu.export.path  # never over the shipped file


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rehearsal_trains_exports_and_checks_without_the_cluster_libraries(tmp_path):
    site = site_without(tmp_path / "site", ABSENT_ON_THE_GPU_MACHINE)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(site), PYTHON=sys.executable, GPU_TRAIN_MINUTES="4",
               GPU_TRAIN_MAX_CLIPS="2")
    args = ["--set", "data.shards=[../data/sample/shards-000000.tar]", "--set", "data.stride=1000",
            "--set", "steps=1", "--set", "batch_size=1", "--set", "log_every=1"]
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_train.sh"), str(out), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=550)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert MESSAGE not in log
    model = tokenizer_core.from_pretrained(out / "model.pt")
    assert model.config.name == "DV4x8x8-mill"
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1]
    assert json.loads((out / "colour.json").read_text())["mean_abs_error"] > 0
    shard3 = json.loads((out / "eval_shard3.json").read_text())
    assert shard3["clips"] == 2 and "psnr_gain_db" in shard3
    assert "eval_shard3.json: 2 clips" in log
