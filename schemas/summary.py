"""`summary.json`, written at the end of every run (also a failed one).

A plain JSON object; `SUMMARY_KEYS` are always present. Versioned by `SUMMARY_VERSION`.

Accounting rule: over every shard with a manifest record,
`samples_total == samples_ok + samples_failed`. Shards: `shards_done` are recorded shards
without a shard-level error, `shards_failed` are quarantined shards plus recorded shards whose
input was damaged (`shard_error`), `shards_pending` the rest of `shards_total`.
"""

from __future__ import annotations

SUMMARY_VERSION = 1

SUMMARY_KEYS = (
    "version",
    "status",  # "finished" | "failed" | "interrupted"
    "shards_total",
    "shards_done",
    "shards_failed",
    "shards_pending",
    "samples_total",
    "samples_ok",
    "samples_failed",
    "clips_written",
    "frames_written",
    "tokens_written",
    "video_seconds",
    "failures_by_reason",  # DeadLetter.reason -> count
    "notes_by_reason",  # non-fatal notes ("too_short", "low_motion", ...) -> count
    "scene_cuts",  # shot cuts found (clips.split_scenes), 0 otherwise
    "quality",  # sampled round-trip quality (quality.sample_rate): clips, psnr/ssim _mean and _p5; or null
    "stage_seconds",  # stage -> summed wall seconds over shards
    "throughput",  # clips_per_s, frames_per_s, tokens_per_s, video_hours_per_hour (this run)
    "quarantined",  # [{"shard_id", "source_url", "reason", "attempts"}]
    "damaged_shards",  # [{"shard_id", "source_url", "reason"}]: recorded with shard_error
    "timings",  # as given by the caller (e.g. wall_seconds)
    "schema_versions",
)
