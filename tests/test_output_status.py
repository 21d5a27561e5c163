"""summary.json accounting and `tokenmill status`, read from the output location only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.records import shard_id
from pipeline.writers.lease import OutputLease
from pipeline.writers.location import OutputLocation
from pipeline.writers.manifest import prepare_output, read_manifest
from pipeline.writers.summary import build_summary, write_summary
from schemas.summary import SUMMARY_KEYS
from tests.output_support import fingerprint_for, make_spec, write_shard

REPO = Path(__file__).resolve().parents[1]
URLS = [f"/data/in-{i:06d}.tar" for i in range(4)]


def _job(out: str, opts=None, done: int = 3) -> float:
    spec = make_spec(out, opts)
    fp = fingerprint_for(spec)
    prepare_output(spec, fp, shards_total=len(URLS))
    started = time.time()
    for u in URLS[:done]:
        write_shard(out, u, fp, storage_options=opts)
    return started


def _status(out: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", "status", out, *extra], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=120)


def test_summary_accounts_for_every_sample_and_every_shard(tmp_path):
    """Totals add up: samples ok + failed = total; done + failed + pending = shards_total."""
    out = str(tmp_path / "out")
    started = _job(out)
    quarantined = [{"shard_id": shard_id(URLS[3]), "source_url": URLS[3], "reason": "read:Timeout", "attempts": 3}]
    summary = build_summary(read_manifest(out), quarantined, {"wall_seconds": 2.0}, len(URLS),
                            started_at=started, status="failed")
    write_summary(out, summary)
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(on_disk)
    assert on_disk["samples_total"] == on_disk["samples_ok"] + on_disk["samples_failed"] == 3 * 4
    assert (on_disk["shards_done"], on_disk["shards_failed"], on_disk["shards_pending"]) == (3, 1, 0)
    assert on_disk["clips_written"] == 3 * 6 and on_disk["failures_by_reason"] == {"decode:DecodeError": 3}
    assert on_disk["throughput"]["clips_per_s"] == 3 * 6 / 2.0
    assert on_disk["quarantined"][0]["reason"] == "read:Timeout"


def test_status_json_reports_progress_of_a_running_job(tmp_path):
    """Mid-run (this test process holds the lease, heartbeating): done/total from records and
    job.json, a rate and an ETA, state running, and who runs it."""
    out = str(tmp_path / "out")
    lease = OutputLease(OutputLocation.of(out), timeout_s=30)
    lease.acquire()
    _job(out, done=3)
    result = _status(out, "--json")
    lease.release()
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["shards_done"], status["shards_total"], status["shards_pending"]) == (3, 4, 1)
    assert status["state"] == "running" and status["running"] and status["clips_written"] == 18
    assert status["driver"] == f"pid {os.getpid()} on {os.uname().nodename}" and status["heartbeat_age_s"] < 30
    assert status["shards_per_s"] > 0 and status["eta_seconds"] > 0
    assert status["failures_by_reason"] == {"decode:DecodeError": 3}


def test_status_says_stopped_when_the_driver_died(tmp_path):
    """A lease left by a driver that is gone (its pid no longer runs) is a stopped job: no ETA,
    and the text says since when and what to do."""
    out = str(tmp_path / "out")
    child = subprocess.run([sys.executable, "-c", (
        "from pipeline.writers.lease import OutputLease; from pipeline.writers.location import OutputLocation; "
        f"OutputLease(OutputLocation.of({out!r}), timeout_s=3600).acquire()")], cwd=REPO, timeout=120)
    assert child.returncode == 0  # it exited holding the lease, as a SIGKILLed driver would
    _job(out, done=2)
    status = json.loads(_status(out, "--json").stdout)
    assert status["state"] == "stopped" and not status["running"] and status["eta_seconds"] is None
    text = _status(out).stdout
    assert "driver   stopped since" in text and "died" in text and "run the same command" in text


def test_status_text_after_the_run_ended(tmp_path):
    out = str(tmp_path / "out")
    _job(out, done=4)
    write_summary(out, build_summary(read_manifest(out), [], {"wall_seconds": 1.0}, len(URLS)))
    result = _status(out)
    assert result.returncode == 0, result.stderr
    assert "4/4 done" in result.stdout and "[finished]" in result.stdout and "24 clips" in result.stdout


def test_status_reads_s3_with_storage_option_flags(s3_server, s3_bucket):
    """Another machine's view: only the S3 output and the --storage-option flags."""
    out = f"s3://{s3_bucket}/out"
    _job(out, s3_server.storage_options, done=2)
    opts = s3_server.storage_options
    result = _status(out, "--json", "--storage-option", f"endpoint_url={opts['endpoint_url']}",
                     "--storage-option", f"key={opts['key']}", "--storage-option", f"secret={opts['secret']}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["shards_done"] == 2


def test_status_of_a_non_output_is_a_usage_error(tmp_path):
    result = _status(str(tmp_path / "nothing-here"))
    assert result.returncode == 2 and "job.json" in result.stderr
