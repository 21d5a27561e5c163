"""`tokenmill submit` through the Ray Jobs API of a real `ray start --head`; cluster.yaml validity."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.jobs_helpers import REPO, SMALL, cli_env


def _submit(address: str, *extra: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "jobs.cli", "submit", "examples/demo.yaml", "--address", address, *extra]
    return subprocess.run(args, cwd=REPO, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_submit_runs_the_job_on_the_cluster(ray_head, tmp_path):
    """The job id is printed; with --wait the job succeeds on the cluster and writes its output."""
    out = tmp_path / "out"
    sets = [a for s in [*SMALL, f"output.uri={out}"] for a in ("--set", s)]
    proc = _submit(ray_head.dashboard_url, *sets, "--wait", env=cli_env(RAY_AUTH_MODE="disabled"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    job_id = proc.stdout.strip().splitlines()[0]
    assert job_id.startswith("raysubmit_")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards_done"] == 4 and summary["clips_written"] > 0
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(ray_head.dashboard_url).get_job_info(job_id)
    assert str(info.status) in ("SUCCEEDED", "JobStatus.SUCCEEDED")
    assert "jobs.cli run examples/demo.yaml" in info.entrypoint


def test_submit_rejects_invalid_spec_before_contacting_a_cluster(tmp_path):
    """An invalid spec exits 2 naming the field; the (unreachable) cluster is never contacted."""
    proc = _submit("http://127.0.0.1:9", "--set", "clips.bogus=1", timeout=60)
    assert proc.returncode == 2
    assert "clips.bogus" in proc.stderr


def _validate(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


def test_cluster_yaml_validates_with_rays_schema():
    """cluster.yaml passes Ray's own launcher schema and has a CPU head plus a GPU worker type."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    _validate(config)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0  # no data work
    gpu = [t for name, t in types.items() if t["resources"].get("GPU", 0) > 0]
    assert gpu and gpu[0]["max_workers"] >= gpu[0]["min_workers"] >= 0
    setup = " ".join(config["setup_commands"])
    assert "torch==" in setup and "download.pytorch.org/whl/cu" in setup and "pip install -e" in setup


def test_cluster_yaml_schema_check_is_real():
    """The same check rejects an unknown key and a worker type without node_config."""
    from jsonschema.exceptions import ValidationError

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    with pytest.raises(ValidationError):
        _validate(dict(config, bogus_key=1))
    broken = yaml.safe_load((REPO / "cluster.yaml").read_text())
    del broken["available_node_types"]["gpu_worker"]["node_config"]
    with pytest.raises(ValidationError):
        _validate(broken)


def test_kuberay_example_is_a_rayjob_running_tokenmill():
    """The KubeRay example parses and runs `tokenmill run` with a GPU worker group."""
    doc = yaml.safe_load((REPO / "examples" / "kuberay-rayjob.yaml").read_text())
    assert doc["kind"] == "RayJob" and doc["apiVersion"].startswith("ray.io/")
    assert doc["spec"]["entrypoint"].startswith("tokenmill run ")
    workers = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" in limits
    # the head does no data work, and the worker group can grow while a job runs
    cluster = doc["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] and workers[0]["maxReplicas"] > workers[0]["minReplicas"]
