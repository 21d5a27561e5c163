"""The driver's shard dispatcher on a real embedded Ray, with shard tasks whose behaviour we set."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from jobs.dispatch import ShardDispatcher


@pytest.fixture
def fake_shard(ray_local):
    """A Ray task standing in for a shard task: fails or sleeps as its (url, launch) says."""

    @ray_local.remote(num_cpus=0.25, max_retries=0)
    def shard(url: str, launch: int, plan: dict) -> dict:
        action = plan.get((url, launch), "ok")
        if action == "fail":
            raise OSError(f"simulated S3 timeout reading {url}")
        if action == "slow":
            time.sleep(60)
        return {"url": url, "launch": launch}

    return shard


def _run(fake_shard, urls, plan, **kwargs):
    running_seen: list[int] = []
    dispatcher = ShardDispatcher(lambda url, launch: fake_shard.remote(url, launch, plan),
                                 on_tick=lambda _r, running: running_seen.append(running), **kwargs)
    return dispatcher.run(urls), running_seen


def test_every_shard_done_once_within_the_in_flight_bound(fake_shard):
    """Shards are handed out as slots free up, never more than max_in_flight at once."""
    urls = [f"s{i}" for i in range(7)]
    result, running = _run(fake_shard, urls, {}, max_in_flight=2, max_attempts=1)
    assert sorted(result.records) == urls and not result.quarantined
    assert max(running) <= 2


def test_failed_shard_is_retried_from_scratch(fake_shard):
    """An infrastructure failure on the first attempt is retried; the second attempt's result counts."""
    result, _ = _run(fake_shard, ["a", "b"], {("b", 1): "fail"}, max_in_flight=2, max_attempts=3,
                     retry_backoff_s=0.1)
    assert result.records["b"] == {"url": "b", "launch": 2}
    assert result.retries == 1 and not result.quarantined


def test_shard_that_keeps_failing_is_quarantined(fake_shard):
    """After max_attempts failures the shard is quarantined with its reasons; the rest finish."""
    plan = {("bad", n): "fail" for n in range(1, 5)}
    result, _ = _run(fake_shard, ["bad", "good"], plan, max_in_flight=2, max_attempts=3, retry_backoff_s=0.05)
    assert list(result.records) == ["good"]
    (q,) = result.quarantined
    assert q["source_url"] == "bad" and q["attempts"] == 3 and len(q["errors"]) == 3
    assert "OSError" in q["reason"] and "simulated S3 timeout" in q["reason"]


def test_straggler_is_rerun_and_first_result_wins(fake_shard):
    """Idle slots at the end re-run a straggling shard; the fast copy's result is kept."""
    start = time.monotonic()
    result, _ = _run(fake_shard, ["a", "b", "slow"], {("slow", 1): "slow"}, max_in_flight=3, max_attempts=1,
                     straggler_min_s=1.0)
    assert time.monotonic() - start < 30  # did not wait for the 60 s copy
    assert result.records["slow"] == {"url": "slow", "launch": 2}
    assert result.speculative == 1 and not result.quarantined


def test_a_stop_request_hands_out_no_more_shards_and_cancels_the_rest_after_the_grace(fake_shard):
    """Stop after the first shard: the queued shards never start, the running one gets the grace
    period and is then cancelled (and waited for); all of them are reported interrupted."""
    stop = SimpleNamespace(event=threading.Event(), hurry=threading.Event(), reason="SIGTERM")
    plan = {("slow", 1): "slow"}
    dispatcher = ShardDispatcher(lambda url, launch: fake_shard.remote(url, launch, plan), max_in_flight=2,
                                 max_attempts=3, stop=stop, stop_grace_s=1.0,
                                 on_tick=lambda result, _n: result.records and stop.event.set())
    start = time.monotonic()
    result = dispatcher.run(["a", "slow", "b", "c"])
    assert time.monotonic() - start < 40  # did not wait for the 60 s shard
    assert list(result.records) == ["a"] and result.interrupted == ["b", "c", "slow"]
    assert dispatcher.launches == {"a": 1, "slow": 1} and not result.quarantined and not dispatcher.cancelled
