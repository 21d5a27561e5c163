"""`tokenmill submit JOB.yaml --address http://HEAD:8265`: run a job on a cluster via the Ray Jobs API.

The project folder travels as the job's `working_dir` (minus virtualenvs, caches and local
outputs), and the entrypoint is `python -m jobs.cli run <spec> --no-progress [--set ...]` run
from it, so the cluster executes exactly the code and spec that were submitted. The spec is
validated here first: an invalid spec exits 2 without contacting the cluster. The job's driver
runs on the cluster (it joins the cluster's Ray through RAY_ADDRESS, which Ray sets for jobs).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from schemas.config import SpecError
from schemas.jobspec import load_job_spec

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# never uploaded: environments, caches, VCS data, local job outputs
EXCLUDES = [".venv", "venv", ".git", "out", "build", "dist", "*.egg-info", "__pycache__",
            ".pytest_cache", ".mypy_cache", ".ruff_cache", ".whl", ".gl"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# a head that has just started answers before its job agent is up; that error is worth waiting out
AGENT_NOT_READY = "No available agent"
AGENT_WAIT_S = 120.0


def _relative_spec(spec_path: str) -> str:
    path = Path(spec_path).resolve()
    try:
        return path.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        raise SpecError("JOB.yaml", f"{spec_path} must lie inside the project folder {PROJECT_ROOT}, "
                                    "which is uploaded as the job's working_dir") from None


def _excludes(output_uri: str) -> list[str]:
    excludes = list(EXCLUDES)
    if "://" not in output_uri:
        try:
            excludes.append(Path(output_uri).resolve().relative_to(PROJECT_ROOT).as_posix())
        except ValueError:
            pass  # outputs outside the project are not uploaded anyway
    return excludes


def build_submission(spec_path: str, overrides: list[str], python: str = "python") -> dict[str, Any]:
    """Keyword arguments for JobSubmissionClient.submit_job (validates the spec first)."""
    spec = load_job_spec(spec_path, overrides)
    words = [python, "-m", "jobs.cli", "run", _relative_spec(spec_path), "--no-progress"]
    for assignment in overrides:
        words += ["--set", assignment]
    return {
        "entrypoint": " ".join(shlex.quote(w) for w in words),
        "runtime_env": {
            "working_dir": str(PROJECT_ROOT),
            "excludes": _excludes(spec.output.uri),
            "env_vars": {"RAY_USAGE_STATS_ENABLED": "0"},
        },
        "metadata": {"tokenmill_job": spec.name, "output_uri": spec.output.uri},
    }


def _wait(client: Any, job_id: str, poll_s: float = 2.0) -> int:
    status = client.get_job_status(job_id)
    while str(status.value if hasattr(status, "value") else status) not in TERMINAL:
        time.sleep(poll_s)
        status = client.get_job_status(job_id)
    name = str(status.value if hasattr(status, "value") else status)
    sys.stderr.write(client.get_job_logs(job_id))
    print(f"job {job_id}: {name}", file=sys.stderr)
    return 0 if name == "SUCCEEDED" else 1


def _submit_when_ready(client: Any, submission: dict[str, Any]) -> str:
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return str(client.submit_job(**submission))
        except RuntimeError as exc:
            if AGENT_NOT_READY not in str(exc) or time.monotonic() > deadline:
                raise
            log.info("the cluster's job agent is not up yet; retrying")
            time.sleep(2.0)


def cli_submit(args: argparse.Namespace) -> int:
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SpecError("--address", "give the Ray dashboard address (http://HEAD:8265) or set RAY_ADDRESS")
    submission = build_submission(args.spec, list(args.overrides))
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    job_id = _submit_when_ready(client, submission)
    print(job_id)
    sys.stdout.flush()
    return _wait(client, job_id) if args.wait else 0
