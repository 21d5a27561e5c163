"""Live progress on the driver: a tqdm bar on a terminal, and Ray metrics for dashboards.

Finished shards, clips and tokens come from the manifest records the dispatcher collects;
in-flight rates (frames/s, tokens/s) come from the tokenizer actors' own counters, as the actor
pool's pings last brought them back (jobs/pool.py: each actor answers `stats` from a separate
concurrency group, so a ping never waits behind a batch). The same
figures are exported as Ray metrics (Prometheus, via the Ray metrics agent), so a cluster
dashboard shows them without a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from jobs.dispatch import DispatchResult

log = logging.getLogger(__name__)

POLL_S = 2.0


def _record_stats(record: Any) -> dict[str, Any]:
    stats = getattr(record, "stats", None)
    if stats is None and isinstance(record, dict):
        stats = record.get("stats")
    if stats is None:
        return {}
    return stats if isinstance(stats, dict) else stats.to_dict()


def _terminal_size() -> tuple[int, int]:
    """(columns, rows) of the terminal. A fresh pseudo-terminal reports 0 x 0, and tqdm then
    draws nothing (no width) or hides the bar (row 0 is "below" a 0-row screen)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
        columns, rows = size.columns, size.lines
    except (OSError, ValueError, AttributeError):
        columns, rows = 0, 0
    return (columns if columns >= 40 else 120), (rows if rows >= 2 else 24)


class _Metrics:
    def __init__(self, job: str):
        from ray.util.metrics import Gauge

        tags = {"job": job}
        names = ("shards_done", "shards_total", "shards_quarantined", "shards_running", "clips_written",
                 "tokens_written", "frames_per_second", "tokens_per_second", "actor_busy_fraction")
        self.gauges = {}
        for name in names:
            gauge = Gauge(f"tokenmill_{name}", f"tokenmill job {name.replace('_', ' ')}", tag_keys=("job",))
            gauge.set_default_tags(tags)
            self.gauges[name] = gauge

    def set(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            if name in self.gauges:
                self.gauges[name].set(float(value))


class Progress:
    """Call `tick(result, running)` often; it redraws at most every POLL_S seconds. `actor_stats`
    returns the actors' latest counters, one dict per actor ({} for one that has not answered)."""

    def __init__(self, job: str, shards_total: int, shards_done: int,
                 actor_stats: Callable[[], list[dict[str, Any]]], show_bar: bool):
        self.read_actor_stats = actor_stats
        self.shards_total = shards_total
        self.done_before = shards_done
        self.started = time.monotonic()
        self.last_poll = 0.0
        self.actor_stats: list[dict[str, Any]] = []
        self.bar = None
        if show_bar:
            from tqdm import tqdm

            columns, rows = _terminal_size()
            self.bar = tqdm(total=shards_total, initial=shards_done, unit="shard", desc=job, ncols=columns,
                            nrows=rows)
        try:
            self.metrics: _Metrics | None = _Metrics(job)
        except Exception as exc:  # noqa: BLE001 - metrics are best effort, never fail a job
            log.debug("Ray metrics unavailable: %s", exc)
            self.metrics = None

    def figures(self, result: DispatchResult, running: int) -> dict[str, float]:
        stats = [_record_stats(r) for r in result.records.values()]
        elapsed = max(time.monotonic() - self.started, 1e-6)
        frames = sum(s.get("frames", 0) for s in self.actor_stats)
        tokens = sum(s.get("tokens", 0) for s in self.actor_stats)
        busy = [s.get("busy_fraction", 0.0) for s in self.actor_stats if s]
        return {
            "shards_done": self.done_before + len(result.records),
            "shards_total": self.shards_total,
            "shards_quarantined": len(result.quarantined),
            "shards_running": running,
            "clips_written": sum(s.get("clips", 0) for s in stats),
            "tokens_written": sum(s.get("tokens", 0) for s in stats),
            "frames_per_second": frames / elapsed,
            "tokens_per_second": tokens / elapsed,
            "actor_busy_fraction": sum(busy) / len(busy) if busy else 0.0,
            "retries": result.retries,
        }

    def tick(self, result: DispatchResult, running: int, force: bool = False) -> None:
        now = time.monotonic()
        if now - self.last_poll < POLL_S and not force:
            return
        self.last_poll = now
        self.actor_stats = self.read_actor_stats()
        self._show(self.figures(result, running))

    def finish(self, result: DispatchResult, actor_stats: list[dict[str, Any]]) -> None:
        """Final figures from the actors' last counters: bar and metrics updated."""
        self.actor_stats = actor_stats
        self._show(self.figures(result, 0))

    def _show(self, fig: dict[str, float]) -> None:
        if self.metrics is not None:
            self.metrics.set(fig)
        if self.bar is not None:
            self.bar.n = int(fig["shards_done"] + fig["shards_quarantined"])
            self.bar.set_postfix_str(
                f"clips={int(fig['clips_written'])} {fig['frames_per_second']:.1f} frames/s "
                f"{fig['tokens_per_second']:.0f} tok/s busy={fig['actor_busy_fraction']:.0%} "
                f"fail={int(fig['shards_quarantined'])} retry={int(fig['retries'])}",
                refresh=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
