"""The output lease: exactly one holder, a live holder refused, a dead one taken over; local and S3."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.writers import storage
from pipeline.writers.lease import LeaseHeld, OutputLease, holder_state, read_lease
from pipeline.writers.location import OutputLocation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    if request.param == "local":
        return OutputLocation.of(str(tmp_path / "out"))
    server = request.getfixturevalue("s3_server")
    return OutputLocation.of(f"s3://{server.make_bucket()}/out", server.storage_options)


def _plant(location: OutputLocation, lease: OutputLease, **changes) -> None:
    """Rewrite the held lease as if another machine's driver wrote it (compare-and-swap)."""
    forged = replace(lease.mine, **changes)
    assert storage.replace_if(location.fs, location.path(location.LEASE), forged.to_json_bytes(), lease.version)


def test_of_drivers_starting_together_exactly_one_gets_the_lease(location):
    leases = [OutputLease(location, timeout_s=30) for _ in range(6)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(leases))

    def start(lease: OutputLease) -> None:
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("held")
        except LeaseHeld:
            outcomes.append("refused")

    threads = [threading.Thread(target=start, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["held"] + ["refused"] * 5
    holder, _ = read_lease(location)
    assert [lease for lease in leases if lease.version is not None][0].mine.run_id == holder.run_id


def test_a_live_holder_on_another_machine_is_refused_and_a_silent_one_taken_over(location):
    first = OutputLease(location, timeout_s=2)
    first.acquire()
    _plant(location, first, host="gpu-node-7", heartbeat_at=time.time())
    with pytest.raises(LeaseHeld) as err:
        OutputLease(location, timeout_s=2).acquire()
    assert "gpu-node-7" in str(err.value) and "another output.uri" in str(err.value)
    holder, version = read_lease(location)
    assert holder_state(holder) == "live"
    storage.replace_if(location.fs, location.path(location.LEASE),
                       replace(holder, heartbeat_at=time.time() - 5).to_json_bytes(), version)
    assert holder_state(read_lease(location)[0]) == "stale"
    second = OutputLease(location, timeout_s=2)
    second.acquire()  # silent for longer than its own timeout: taken over
    assert read_lease(location)[0].run_id == second.mine.run_id
    assert not first.renew() and first.lost.is_set()  # the old holder finds out at its next beat
    second.release()
    assert read_lease(location) is None


def test_the_heartbeat_keeps_the_lease_live_and_release_removes_it(location):
    lease = OutputLease(location, timeout_s=1.0)
    lease.acquire()
    lease.start_heartbeat()
    time.sleep(2.5)  # over twice the timeout: only the heartbeat keeps it live
    assert holder_state(read_lease(location)[0]) == "live"
    with pytest.raises(LeaseHeld):
        OutputLease(location, timeout_s=1.0).acquire()
    lease.release()
    assert read_lease(location) is None


def test_a_dead_driver_on_this_machine_is_taken_over_at_once(tmp_path):
    """A driver that exited (as if SIGKILLed) holding the lease: its pid is gone, so the next
    driver does not wait for the timeout."""
    out = str(tmp_path / "out")
    code = ("from pipeline.writers.lease import OutputLease; from pipeline.writers.location import OutputLocation; "
            f"OutputLease(OutputLocation.of({out!r}), timeout_s=3600).acquire()")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == 0
    holder, _ = read_lease(out)
    assert holder_state(holder) == "dead"
    lease = OutputLease(OutputLocation.of(out), timeout_s=3600)
    lease.acquire()
    assert read_lease(out)[0].pid == lease.mine.pid
