"""One driver per output, and stopping: real driver processes, real signals, an embedded Ray.

The job runs one shard at a time (decode_workers=1) with every clip of every video, so it is
mid-job when a test acts. After each story the output must hold exactly the recorded files and
the same tokens as the other story's, and no process of the embedded Ray may outlive its driver.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.procs import descendants
from tests.jobs_helpers import REPO, SMALL, cli_env, read_summary, read_tokens, run_args, run_cli

pytestmark = pytest.mark.slow

JOB = [*SMALL, "clips.max_clips_per_video=null", "clips.stride=8", "resources.decode_workers=1",
       "retries.stop_grace_s=3", "retries.lease_timeout_s=20"]


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(run_args(out, *JOB), cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, done: Callable[[], bool], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"driver ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if done():
            return
        time.sleep(0.2)
    raise AssertionError(f"the driver {what} in time")


def _wait_for_records(out: Path, proc: subprocess.Popen) -> None:
    _wait_for(proc, lambda: any((out / "_manifest").glob("*.json")), "recorded no shard")


def _status(out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "status", str(out), "--json"], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _exact_folders(out: Path) -> None:
    records = [json.loads(p.read_text()) for p in (out / "_manifest").glob("*.json")]
    named = {o["path"] for r in records for o in r["outputs"].values()}
    published = {f"{sub}/{p.name}" for sub in ("tokens", "errors") for p in (out / sub).iterdir()}
    assert published == named


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (None if fields[0] == "Z" else (int(fields[1]), fields[19]))  # type: ignore[return-value]


def _descendants(root: int) -> dict[int, str]:
    """pid -> start time of every live process below `root`."""
    return {pid: st[1] for pid in descendants(root) if (st := _stat(pid))}


def _alive_after(procs: dict[int, str], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid, start in procs.items() if (st := _stat(pid)) and st[1] == start]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """Driver A holds the output; driver B on it is refused; once A has recorded a shard, with
    three to go, it gets SIGTERM at once (waiting for B in between gave a fast host time to
    finish the whole job first)."""
    out = tmp_path_factory.mktemp("stop") / "out"
    a = _start(out)
    _wait_for(a, (out / "_lease.json").exists, "took no lease")
    b = run_cli(out, *JOB, timeout=180)
    _wait_for_records(out, a)
    ray_procs = _descendants(a.pid)
    assert a.poll() is None, "driver A finished before it could be stopped"
    a.send_signal(signal.SIGTERM)
    _, err = a.communicate(timeout=120)
    return out, a, b, err, ray_procs


def test_a_second_driver_on_a_live_output_is_refused_naming_the_holder(interrupted):
    out, a, b, _, _ = interrupted
    assert b.returncode == 2, b.stderr[-3000:]
    assert f"pid {a.pid} on {socket.gethostname()}" in b.stderr
    assert "another driver" in b.stderr and "tokenmill status" in b.stderr
    assert "Traceback" not in b.stderr


def test_sigterm_stops_cleanly_with_one_line_and_exit_143(interrupted):
    """No traceback, no native dump, no resend storm; summary says interrupted; status says stopped."""
    out, a, _, err, ray_procs = interrupted
    assert a.returncode == 143, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("tokenmill run: interrupted")]
    assert len(lines) == 1, err[-3000:]
    match = re.fullmatch(r"tokenmill run: interrupted: (\d) of 4 shards done; run the same command to resume",
                         lines[0])
    assert match, lines[0]
    for bad in ("Traceback", "SIGTERM received", "PC: @", "resending batch"):
        assert bad not in err, err[-3000:]
    summary = read_summary(out)
    assert summary["status"] == "interrupted" and summary["shards_done"] == int(match.group(1)) >= 1
    assert not (out / "_lease.json").exists()
    _exact_folders(out)
    status = _status(out)
    assert status["state"] == "interrupted" and not status["running"]
    assert ray_procs and not _alive_after(ray_procs), "processes of the embedded Ray outlived the driver"


@pytest.fixture(scope="module")
def resumed(interrupted):
    out = interrupted[0]
    proc = run_cli(out, *JOB)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_a_killed_driver_is_taken_over_at_once_and_the_output_matches(tmp_path, resumed):
    """SIGKILL leaves a lease behind: status says stopped, and the next driver on the same machine
    takes it over at once (its pid is gone); the finished output equals the interrupted-and-resumed one."""
    out = tmp_path / "out"
    c = _start(out)
    _wait_for_records(out, c)
    c.kill()
    c.communicate(timeout=60)
    assert (out / "_lease.json").exists()
    status = _status(out)
    assert status["state"] == "stopped" and not status["running"] and status["driver"].startswith(f"pid {c.pid}")
    started = time.monotonic()
    d = run_cli(out, *JOB)
    assert d.returncode == 0, d.stderr[-3000:]
    assert "taking over the lease" in d.stderr and "is gone" in d.stderr
    assert time.monotonic() - started < 600
    assert read_tokens(out) == read_tokens(resumed)
    _exact_folders(out)
    _exact_folders(resumed)
    for where in (out, resumed):
        summary = read_summary(where)
        assert summary["shards_done"] == 4 and summary["samples_total"] == summary["samples_ok"] + summary["samples_failed"]
