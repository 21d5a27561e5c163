"""The driver's shard queue: dynamic hand-out, bounded in flight, retries, quarantine, stragglers.

Shards are handed out one at a time as slots free up (no static split: a fast worker simply
comes back for more). A shard task that fails for any reason is retried from scratch up to
`max_attempts`; a shard that keeps failing is quarantined and reported, never silently dropped.
Near the end, when slots sit idle, the oldest running shard that has taken much longer than a
typical shard is launched a second time; whichever copy commits first wins (the manifest
decides), the other is cancelled or its result ignored.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.records import shard_id

log = logging.getLogger(__name__)

# a straggler is re-run when it has run this many times longer than the median finished shard
STRAGGLER_FACTOR = 3.0
STRAGGLER_MIN_S = 20.0
# a failed shard waits before its next attempt (doubling, capped): S3 throttling and a node that
# is being replaced both clear up with time, an immediate retry would likely fail the same way
RETRY_BACKOFF_S = 1.0
RETRY_BACKOFF_MAX_S = 30.0

# a shard is an InputShard (a job's) or a bare URL (tests); (shard, launch number) -> ObjectRef
# of a ManifestRecord
Launch = Callable[[Any, int], Any]


def _names(shard: Any) -> tuple[str, str]:
    """(shard id, source url) of an InputShard or a bare URL."""
    return (shard_id(shard), shard) if isinstance(shard, str) else (shard.id, shard.url)


@dataclass
class _Running:
    url: Any  # the shard: an InputShard or a bare URL
    launch: int
    started: float
    speculative: bool = False


@dataclass
class DispatchResult:
    records: dict[Any, Any] = field(default_factory=dict)  # shard -> ManifestRecord
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0
    speculative: int = 0


def describe_failure(exc: BaseException) -> str:
    """'ErrorClass: message' of the root cause (Ray wraps task errors in RayTaskError)."""
    cause = exc
    as_instance = getattr(exc, "as_instanceof_cause", None)
    if callable(as_instance):
        try:
            cause = as_instance()
        except Exception:  # noqa: BLE001 - fall back to the wrapper's own name
            cause = exc
    name = type(cause).__name__.replace("RayTaskError(", "").rstrip(")")
    message = str(cause).strip().splitlines()
    return f"{name}: {message[-1][:300] if message else ''}"


class ShardDispatcher:
    def __init__(self, launch: Launch, max_in_flight: int, max_attempts: int,
                 on_tick: Callable[[DispatchResult, int], None] | None = None,
                 straggler_min_s: float = STRAGGLER_MIN_S, retry_backoff_s: float = RETRY_BACKOFF_S):
        self.launch = launch
        self.straggler_min_s = straggler_min_s
        self.retry_backoff_s = retry_backoff_s
        self.max_in_flight = max(1, max_in_flight)
        self.max_attempts = max_attempts
        self.on_tick = on_tick
        self.result = DispatchResult()
        self.running: dict[Any, _Running] = {}
        self.queue: deque[Any] = deque()
        self.delayed: list[tuple[float, Any]] = []  # (monotonic time it may start, shard)
        self.failures: dict[Any, list[str]] = {}
        self.launches: dict[Any, int] = {}
        self.durations: list[float] = []

    def run(self, urls: list[Any]) -> DispatchResult:
        import ray

        self.queue.extend(urls)
        while self.queue or self.running or self.delayed:
            self._release_delayed()
            self._fill()
            if not self.running:
                time.sleep(0.1)  # only delayed retries left: wait for the first to come due
                continue
            refs = list(self.running)
            ready, _ = ray.wait(refs, num_returns=1, timeout=0.5)
            if ready and len(refs) > 1:
                # every shard that is done, not only the first: one wait per finished shard
                # would cap hand-outs at a few hundred per second with thousands in flight
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                self._collect(ref)
            if self.on_tick is not None:
                self.on_tick(self.result, len(self.running))
        return self.result

    def _release_delayed(self) -> None:
        now = time.monotonic()
        ready = [url for at, url in self.delayed if at <= now]
        self.delayed = [(at, url) for at, url in self.delayed if at > now]
        self.queue.extendleft(reversed(ready))  # retries go first: they hold up the job's end

    def _start(self, url: Any, speculative: bool = False) -> None:
        self.launches[url] = self.launches.get(url, 0) + 1
        ref = self.launch(url, self.launches[url])
        self.running[ref] = _Running(url, self.launches[url], time.monotonic(), speculative)

    def _fill(self) -> None:
        while self.queue and len(self.running) < self.max_in_flight:
            self._start(self.queue.popleft())
        if not self.queue and not self.delayed and len(self.running) < self.max_in_flight:
            straggler = self._straggler()
            if straggler is not None:
                log.info("shard %s is straggling; running a second copy", _names(straggler)[0])
                self.result.speculative += 1
                self._start(straggler, speculative=True)

    def _straggler(self) -> Any:
        if not self.durations:
            return None
        limit = max(self.straggler_min_s, STRAGGLER_FACTOR * statistics.median(self.durations))
        now = time.monotonic()
        copies: dict[Any, int] = {}
        for run in self.running.values():
            copies[run.url] = copies.get(run.url, 0) + 1
        old = [r for r in self.running.values() if copies[r.url] == 1 and now - r.started > limit]
        return min(old, key=lambda r: r.started).url if old else None

    def _collect(self, ref: Any) -> None:
        import ray

        run = self.running.pop(ref)
        try:
            record = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - every shard failure is classified below
            self._failed(run, exc)
            return
        if run.url in self.result.records:
            return  # the other copy of a re-run straggler already won
        self.result.records[run.url] = record
        self.durations.append(time.monotonic() - run.started)
        if self.launches[run.url] == 1:
            return  # launched once: no other copy to cancel (a scan per shard is O(in flight))
        for other_ref, other in list(self.running.items()):
            if other.url == run.url:
                # not waited for: a loser that still commits finds the winner's record and
                # discards its own files (ShardWriter's rule), so the job can end now
                del self.running[other_ref]
                ray.cancel(other_ref)

    def _failed(self, run: _Running, exc: BaseException) -> None:
        if run.url in self.result.records or (
                self.launches[run.url] > 1 and any(r.url == run.url for r in self.running.values())):
            return  # another copy of this shard succeeded or is still running
        reason = describe_failure(exc)
        sid, url = _names(run.url)
        history = self.failures.setdefault(run.url, [])
        history.append(reason)
        if len(history) < self.max_attempts:
            log.warning("shard %s failed (attempt %d/%d): %s; retrying",
                        sid, len(history), self.max_attempts, reason)
            self.result.retries += 1
            wait = min(RETRY_BACKOFF_MAX_S, self.retry_backoff_s * 2 ** (len(history) - 1))
            self.delayed.append((time.monotonic() + wait, run.url))
            return
        log.error("shard %s quarantined after %d attempts: %s", sid, len(history), reason)
        self.result.quarantined.append({
            "shard_id": sid,
            "source_url": url,
            "attempts": len(history),
            "reason": reason,
            "errors": history,
        })
