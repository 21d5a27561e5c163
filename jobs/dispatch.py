"""The driver's shard queue: dynamic hand-out, bounded in flight, retries, quarantine, stragglers.

Shards are handed out one at a time as slots free up (no static split: a fast worker simply
comes back for more). A shard task that fails for any reason is retried from scratch up to
`max_attempts`; a shard that keeps failing is quarantined and reported, never silently dropped.
Near the end, when slots sit idle, the oldest running shard that has taken much longer than a
typical shard is launched a second time; whichever copy commits first wins (the manifest
decides), the other is cancelled, and waited for before the run ends (so the end-of-run
clean-up sees every attempt finished). Failures are classified by `pipeline.faults`: the class
is part of the reason, throttling backs off longer, and the `signature` of a fault (where in
the shard it happened) goes to the next attempt, which can then tell damage from a flaky read.

On a stop request (`stop` set: SIGTERM/SIGINT) no further shard is handed out; running ones
get `stop_grace_s` to commit, then are cancelled (their writers remove what they wrote).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline import faults
from pipeline.records import shard_id

log = logging.getLogger(__name__)

# a straggler is re-run when it has run this many times longer than the median finished shard
STRAGGLER_FACTOR = 3.0
STRAGGLER_MIN_S = 20.0
# a failed shard waits before its next attempt (doubling, capped): S3 throttling and a node that
# is being replaced both clear up with time, an immediate retry would likely fail the same way
RETRY_BACKOFF_S = 1.0
RETRY_BACKOFF_MAX_S = 30.0
STOP_GRACE_S = 30.0
# how long cancelled attempts get to remove their files before the run goes on without them
CANCEL_WAIT_S = 15.0

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
    interrupted: list[str] = field(default_factory=list)  # urls stopped by a stop request


def _cause(exc: BaseException) -> BaseException:
    """The task's own exception where Ray wrapped it (RayTaskError), else `exc`."""
    as_instance = getattr(exc, "as_instanceof_cause", None)
    if callable(as_instance):
        try:
            return as_instance()
        except Exception:  # noqa: BLE001 - fall back to the wrapper itself
            return exc
    return exc


def describe_failure(exc: BaseException) -> str:
    """'ErrorClass: message' of the root cause (Ray wraps task errors in RayTaskError)."""
    cause = _cause(exc)
    name = type(cause).__name__.replace("RayTaskError(", "").rstrip(")")
    message = str(cause).strip().splitlines()
    return f"{name}: {message[-1][:300] if message else ''}"


class ShardDispatcher:
    def __init__(self, launch: Launch, max_in_flight: int, max_attempts: int,
                 on_tick: Callable[[DispatchResult, int], None] | None = None,
                 straggler_min_s: float = STRAGGLER_MIN_S, retry_backoff_s: float = RETRY_BACKOFF_S,
                 stop: Any = None, stop_grace_s: float = STOP_GRACE_S):
        self.launch = launch
        self.stop = stop  # a jobs.stop.StopRequest (or anything with .event and .hurry)
        self.stop_grace_s = stop_grace_s
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
        self.cancelled: list[Any] = []  # losers told to stop; waited for before run() returns
        # url -> signatures of the faults its attempts met; the launch passes them to the next
        # attempt (see pipeline.faults: the same fault twice is the input's own)
        self.faults_seen: dict[Any, set[str]] = {}

    def known_faults(self, url: Any) -> frozenset[str]:
        return frozenset(self.faults_seen.get(url, ()))

    def run(self, urls: list[Any]) -> DispatchResult:
        import ray

        self.queue.extend(urls)
        while self.queue or self.running or self.delayed:
            if self._stopping():
                self._stop_running()
                break
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
        self._wait_cancelled()
        return self.result

    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.event.is_set()

    def _stop_running(self) -> None:
        """No new shards; the running ones get the grace period to commit, then are cancelled."""
        import ray

        left = {run.url for run in self.running.values()} | set(self.queue) | {u for _, u in self.delayed}
        self.queue.clear()
        self.delayed.clear()
        log.warning("stopping (%s): %d shards running get up to %.0f s to finish", self.stop.reason,
                    len({r.url for r in self.running.values()}), self.stop_grace_s)
        deadline = time.monotonic() + self.stop_grace_s
        while self.running and time.monotonic() < deadline and not self.stop.hurry.is_set():
            ready, _ = ray.wait(list(self.running), num_returns=1, timeout=0.2)
            for ref in ready:
                self._collect(ref, retry=False)
            if self.on_tick is not None:
                self.on_tick(self.result, len(self.running))
        for ref in list(self.running):
            del self.running[ref]
            self._cancel(ref)
        self.result.interrupted = sorted(_names(u)[1] for u in left if u not in self.result.records)

    def _cancel(self, ref: Any) -> None:
        import ray

        # not forced: the task gets KeyboardInterrupt and its writer removes what it published
        ray.cancel(ref)
        self.cancelled.append(ref)

    def _wait_cancelled(self) -> None:
        """Give cancelled attempts time to clean up, so nothing of theirs appears after run()."""
        import ray

        if not self.cancelled:
            return
        _, pending = ray.wait(self.cancelled, num_returns=len(self.cancelled), timeout=CANCEL_WAIT_S)
        for ref in pending:
            log.warning("a cancelled shard attempt did not stop within %.0f s; killing its worker", CANCEL_WAIT_S)
            ray.cancel(ref, force=True)
        self.cancelled = []

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

    def _collect(self, ref: Any, retry: bool = True) -> None:
        import ray

        run = self.running.pop(ref)
        try:
            record = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - every shard failure is classified below
            if retry:
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
                self._cancel(other_ref)

    def _failed(self, run: _Running, exc: BaseException) -> None:
        cause = _cause(exc)
        where = faults.signature(cause)
        if where:
            self.faults_seen.setdefault(run.url, set()).add(where)
        if run.url in self.result.records or (
                self.launches[run.url] > 1 and any(r.url == run.url for r in self.running.values())):
            return  # another copy of this shard succeeded or is still running
        kind = faults.classify(cause)
        reason = describe_failure(exc)
        sid, url = _names(run.url)
        history = self.failures.setdefault(run.url, [])
        history.append(f"{kind}: {reason}")
        if len(history) < self.max_attempts:
            log.warning("shard %s failed (attempt %d/%d, %s): %s; retrying",
                        sid, len(history), self.max_attempts, kind, reason)
            self.result.retries += 1
            wait = faults.retry_delay(cause, len(history), self.retry_backoff_s, RETRY_BACKOFF_MAX_S)
            self.delayed.append((time.monotonic() + wait, run.url))
            return
        log.error("shard %s failed after %d attempts: %s", sid, len(history), reason)
        self.result.quarantined.append({
            "shard_id": sid,
            "source_url": url,
            "attempts": len(history),
            "reason": reason,
            "class": kind,
            "errors": history,
        })
