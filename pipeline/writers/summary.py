"""summary.json: totals over every recorded shard, failures by reason, stage times, throughput.

Throughput counts only the shards recorded during this run (finished at or after `started_at`)
over this run's wall time, so a resume that skips finished shards reports its own speed.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.writers import storage
from pipeline.writers.location import OutputLocation
from schemas.errors import ERRORS_SCHEMA_VERSION
from schemas.manifest import MANIFEST_VERSION, ManifestRecord
from schemas.summary import SUMMARY_VERSION
from schemas.tokens import TOKENS_SCHEMA_VERSION

_SUMS = ("samples_total", "samples_ok", "samples_failed", "clips", "frames", "tokens")


def _records(records: Mapping[str, ManifestRecord] | Iterable[ManifestRecord]) -> list[ManifestRecord]:
    return list(records.values()) if isinstance(records, Mapping) else list(records)


def _totals(records: list[ManifestRecord]) -> dict[str, Any]:
    sums: dict[str, Any] = {k: sum(int(r.stats.get(k, 0)) for r in records) for k in _SUMS}
    failures: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for r in records:
        failures.update(r.stats.get("failures", {}))
        notes.update(r.stats.get("notes", {}))
        seconds.update(r.stats.get("seconds", {}))
    sums["video_seconds"] = sum(float(r.stats.get("video_seconds", 0.0)) for r in records)
    sums["scene_cuts"] = sum(int(r.stats.get("scene_cuts", 0)) for r in records)
    sums["quality"] = [q for r in records for q in r.stats.get("quality", [])]
    sums["failures"], sums["notes"] = dict(failures), dict(notes)
    sums["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return sums


def quality_summary(scores: list[list[float]]) -> dict[str, Any] | None:
    """Mean and 5th percentile of the sampled clips' [psnr, ssim] (quality.sample_rate); None if none."""
    if not scores:
        return None
    import numpy as np

    values = np.asarray(scores, dtype=np.float64)  # [clips, 2]
    out: dict[str, Any] = {"clips": len(scores)}
    for i, name in enumerate(("psnr", "ssim")):
        out[f"{name}_mean"] = round(float(values[:, i].mean()), 4)
        out[f"{name}_p5"] = round(float(np.percentile(values[:, i], 5)), 4)
    return out


def _throughput(records: list[ManifestRecord], started_at: float | None, wall: float | None) -> dict[str, Any]:
    recent = [r for r in records if started_at is None or r.finished_at >= started_at]
    t = _totals(recent)
    rate = (lambda n: round(n / wall, 3)) if wall and wall > 0 else (lambda n: None)
    return {
        "shards": len(recent),
        "wall_seconds": wall,
        "clips_per_s": rate(t["clips"]),
        "frames_per_s": rate(t["frames"]),
        "tokens_per_s": rate(t["tokens"]),
        "video_hours_per_hour": rate(t["video_seconds"]),  # seconds per second == hours per hour
    }


def build_summary(records: Mapping[str, ManifestRecord] | Iterable[ManifestRecord],
                  quarantined: list[dict[str, Any]], timings: dict[str, Any], shards_total: int,
                  started_at: float | None = None, status: str = "finished") -> dict[str, Any]:
    """The summary of an output after a run.

    records: every manifest record (read_manifest); quarantined: shards given up on this run,
    dicts with at least shard_id, source_url, reason; timings: at least `wall_seconds` for
    throughput (anything else is copied); started_at: unix time this run started.
    """
    recs = _records(records)
    damaged = [{"shard_id": r.shard_id, "source_url": r.source_url, "reason": r.stats.get("shard_error")}
               for r in recs if r.stats.get("shard_error")]
    recorded_ids = {r.shard_id for r in recs}
    quarantined = [q for q in quarantined if q.get("shard_id") not in recorded_ids]
    t = _totals(recs)
    done = len(recs) - len(damaged)
    failed = len(quarantined) + len(damaged)
    return {
        "version": SUMMARY_VERSION,
        "status": status,
        "shards_total": shards_total,
        "shards_done": done,
        "shards_failed": failed,
        "shards_pending": max(0, shards_total - done - failed),
        "samples_total": t["samples_total"],
        "samples_ok": t["samples_ok"],
        "samples_failed": t["samples_failed"],
        "clips_written": t["clips"],
        "frames_written": t["frames"],
        "tokens_written": t["tokens"],
        "video_seconds": round(t["video_seconds"], 3),
        "failures_by_reason": t["failures"],
        "notes_by_reason": t["notes"],
        "scene_cuts": t["scene_cuts"],
        "quality": quality_summary(t["quality"]),
        "stage_seconds": t["seconds"],
        "throughput": _throughput(recs, started_at, timings.get("wall_seconds")),
        "quarantined": quarantined,
        "damaged_shards": damaged,
        "timings": dict(timings),
        "schema_versions": {"tokens": TOKENS_SCHEMA_VERSION, "errors": ERRORS_SCHEMA_VERSION,
                            "manifest": MANIFEST_VERSION, "summary": SUMMARY_VERSION},
        "written_at": time.time(),
    }


def write_summary(where: OutputLocation | str, summary: dict[str, Any],
                  storage_options: dict[str, Any] | None = None) -> None:
    """Write summary.json whole (one PUT, so a reader never sees half of it)."""
    loc = OutputLocation.of(where, storage_options)
    storage.put_bytes(loc.fs, loc.path(loc.SUMMARY), json.dumps(summary, indent=2, sort_keys=True).encode())
