"""Shards that keep failing are quarantined (exit 1, listed in summary.json); S3 in and out."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.jobs_helpers import DEMO, REPO, SMALL, cli_env


def _spec(tmp_path, shards: list[str], output: str, storage_options: dict) -> str:
    data = yaml.safe_load(DEMO.read_text())
    data["input"] = {"shards": shards, "storage_options": storage_options}
    data["output"] = {"uri": output, "format": "parquet", "storage_options": storage_options}
    data["retries"] = {"max_attempts": 2}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_missing_shard_is_quarantined_and_exit_is_1(tmp_path, s3_server, sample_shards):
    """One shard on S3 reads fine, the other's object is gone: retried, then quarantined; exit 1."""
    bucket = s3_server.make_bucket()
    good = s3_server.upload(sample_shards[2], f"s3://{bucket}/in/good-000000.tar")
    missing = f"s3://{bucket}/in/missing-000001.tar"
    output = f"s3://{bucket}/out"
    spec = _spec(tmp_path, [good, missing], output, s3_server.storage_options)
    args = [sys.executable, "-m", "jobs.cli", "run", spec, "--no-progress"]
    for s in SMALL:
        args += ["--set", s]
    proc = subprocess.run(args, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert missing in proc.stderr and "failed permanently" in proc.stderr
    fs = s3_server.filesystem()
    summary = json.loads(fs.cat_file(f"{output}/summary.json"))
    assert summary["shards_total"] == 2 and summary["shards_done"] == 1 and summary["shards_failed"] == 1
    (q,) = summary["quarantined"]
    assert q["source_url"] == missing and q["attempts"] == 2
    assert "FileNotFoundError" in q["reason"] or "NoSuchKey" in q["reason"], q["reason"]
    assert summary["retries"] == 1 and summary["clips_written"] > 0
    tokens = fs.ls(f"{output}/tokens")
    assert [t for t in tokens if t.endswith(".parquet")] and not [t for t in tokens if "missing" in t]
