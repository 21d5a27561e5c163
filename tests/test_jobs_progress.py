"""Progress: a live bar on a terminal, and the same figures as Ray (Prometheus) metrics."""

from __future__ import annotations

import os
import pty
import re
import time
import urllib.request

import pytest

from jobs.runner import run_job
from schemas.jobspec import load_job_spec
from tests.fixtures.net import free_port
from tests.jobs_helpers import DEMO, REPO, SMALL, cli_env, run_args


@pytest.fixture(scope="module")
def ray_with_metrics():
    import ray

    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _metrics_export_port=port,
             namespace="tokenmill", log_to_driver=False)
    yield port
    ray.shutdown()


def _scrape(port: int, job: str, names: list[str], until: dict[str, float], timeout: float = 90) -> dict[str, float]:
    """The job's gauges (series labelled job=JOB) from Ray's Prometheus endpoint, once `until` holds
    (metrics are exported every few seconds, so the first values seen may be older ones)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        found = {}
        for line in text.splitlines():
            for name in names:
                if line.startswith(f"ray_{name}{{") and f'job="{job}"' in line:
                    found[name] = float(line.rsplit(" ", 1)[1])
        if set(found) == set(names) and all(found[k] == v for k, v in until.items()):
            return found
        time.sleep(2)
    raise AssertionError(f"metrics {names} for job {job} not exported on port {port}")


def test_bar_shows_shards_clips_rates_and_failures(ray_with_metrics, tmp_path, capsys):
    """With progress on (stderr is a terminal), the bar ends at 4/4 shards with the job's figures."""
    spec = load_job_spec(str(DEMO), [*SMALL, f"output.uri={tmp_path / 'out'}"])
    assert run_job(spec, show_progress=True).exit_code == 0
    screen = capsys.readouterr().err
    assert re.search(r"4/4 \[", screen), screen[-2000:]
    for figure in ("clips=", "frames/s", "tok/s", "busy=", "fail=0", "retry=0"):
        assert figure in screen


def test_cli_draws_the_bar_on_a_real_terminal(tmp_path):
    """`tokenmill run` with a pseudo-terminal as its controlling terminal (like a user's shell)."""
    args = run_args(tmp_path / "out", *SMALL)
    args.remove("--no-progress")
    pid, master = pty.fork()
    if pid == 0:  # the child: stdin/stdout/stderr are the terminal
        os.chdir(REPO)
        os.execve(args[0], args, cli_env())
    chunks, deadline = [], time.time() + 240
    while time.time() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal closed with the child
            break
        if not data:
            break
        chunks.append(data.decode(errors="replace"))
    _, status = os.waitpid(pid, 0)
    os.close(master)
    screen = "".join(chunks)
    assert os.waitstatus_to_exitcode(status) == 0, screen[-3000:]
    assert re.search(r"4/4 \[", screen), screen[-2000:]
    assert "clips=" in screen and "tok/s" in screen and "fail=0" in screen


def test_job_figures_are_ray_metrics(ray_with_metrics, tmp_path):
    """After a run the driver's gauges hold the job's totals, scraped from Ray's metrics endpoint."""
    spec = load_job_spec(str(DEMO), [*SMALL, f"output.uri={tmp_path / 'out'}", "name=metrics-test"])
    outcome = run_job(spec)
    assert outcome.exit_code == 0
    names = ["tokenmill_shards_done", "tokenmill_clips_written", "tokenmill_tokens_written"]
    got = _scrape(ray_with_metrics, "metrics-test", names, until={"tokenmill_shards_done": 4})
    assert got["tokenmill_shards_done"] == 4
    assert got["tokenmill_clips_written"] == outcome.summary["clips_written"] > 0
    assert got["tokenmill_tokens_written"] == outcome.summary["tokens_written"]
