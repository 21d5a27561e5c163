"""bench/gpu_check.py, the device check, rehearsed on CPU so it cannot rot before a GPU runs it.

It must import nothing the GPU machine lacks (no Ray, PyAV, decord, webdataset, s3fs or
pydantic, nor the pipeline package that pulls them in; schemas.hubref, plain Python, is fine): a
sitecustomize on PYTHONPATH makes those imports fail in the script and in its decode pool's
processes alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.absent import MESSAGE, site_without

REPO = Path(__file__).resolve().parents[1]
ABSENT_ON_THE_GPU_MACHINE = ["ray", "av", "decord", "webdataset", "s3fs", "pydantic", "pipeline",
                             "braceexpand", "moto", "boto3", "botocore"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_cpu_rehearsal_runs_every_section_without_the_pipeline_dependencies(tmp_path):
    site = site_without(tmp_path / "site", ABSENT_ON_THE_GPU_MACHINE)
    out = tmp_path / "report"
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{REPO}", PYTHON=sys.executable,
               GPU_CHECK_TIMEOUT_S="800")
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(out), "--cpu", "--quick",
                           "--models", "DV4x8x8-tiny"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=850)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert "errors" not in report
    assert report["parity"]["DV4x8x8-tiny"]["bf16_vs_fp32"]["ids_equal"] > 0.5
    assert "DV4x8x8-mill" in report["parity"]
    impls = {r["impl"] for r in report["throughput"]["rows"] if "frames_per_s" in r}
    assert impls == {"native_bf16", "jit_bf16", "native_fp32_tf32"}
    jit = next(r for r in report["throughput"]["rows"] if r["impl"] == "jit_bf16")
    assert jit["vs_native_ids_equal"] > 0.9  # the traced form computes what the native model does
    assert [r["batch"] for r in report["sweep"]["rows"]] == [1, 2, 4]  # and the auto batch (CPU: 4)
    plain, refined = report["refine"]["rows"]
    assert refined["refine_steps"] == 2 and refined["psnr"] > plain["psnr"]
    feeds = [r["feed"] for r in report["actor"]["runs"]]
    assert feeds[:2] == ["memory", "memory"] and feeds[2].startswith("decode pool")
    assert all(r["batches"] > 0 and 0 < r["busy"] <= 1.0 for r in report["actor"]["runs"])
    assert report["actor"]["decode_only"]["frames_per_s"] > 0
    markdown = (out / "gpu_check.md").read_text()
    for heading in ("## Parity", "## Encode throughput", "## Batch sweep", "## Actor pipeline"):
        assert heading in markdown
    assert MESSAGE not in proc.stdout + proc.stderr
