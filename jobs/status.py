"""`tokenmill status OUTPUT [--json]`: progress of a job, read only from its output location.

Works from any machine that can read OUTPUT, while the job runs or after: shards total from
`job.json`, finished shards and totals from the manifest records, rate and ETA from the
records finished during the current run (since job.json was last written). Whether a driver
runs comes from its lease (`_lease.json`): running while its heartbeat is fresh; a lease with
a stale heartbeat (or, on the driver's own machine, a gone pid) is a driver that died. With no
lease, the latest run ended: how, from `summary.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from schemas.config import SpecError


def _read_summary(location: Any) -> dict[str, Any] | None:
    from pipeline.writers import storage

    try:
        return dict(json.loads(storage.read_bytes(location.fs, location.path(location.SUMMARY))))
    except FileNotFoundError:
        return None


def driver_state(location: Any, summary: dict[str, Any] | None, run_started_at: float,
                 now: float | None = None) -> dict[str, Any]:
    """{"state", "running", "since", "driver", "heartbeat_age_s"} of the output's driver."""
    from pipeline.writers.lease import holder_state, read_lease

    now = time.time() if now is None else now
    lease = read_lease(location)
    if lease is not None:
        holder = lease[0]
        alive = holder_state(holder, now) == "live"
        return {"state": "running" if alive else "stopped", "running": alive,
                "since": holder.started_at if alive else holder.heartbeat_at,
                "driver": f"pid {holder.pid} on {holder.host}", "heartbeat_age_s": now - holder.heartbeat_at,
                "ray_job_id": holder.ray_job_id}
    ended = summary is not None and summary.get("written_at", 0) >= run_started_at
    if ended and summary is not None:
        return {"state": summary.get("status", "finished"), "running": False, "since": summary["written_at"],
                "driver": None, "heartbeat_age_s": None, "ray_job_id": None}
    # no lease and no summary of this run: its driver died before it could write either
    return {"state": "stopped", "running": False, "since": None, "driver": None, "heartbeat_age_s": None,
            "ray_job_id": None}


def _rates(shards: int, clips: int, since: float, until: float) -> tuple[float | None, float | None]:
    """(shards/s, clips/s) of this run: from its start (job.json written) to `until`."""
    span = until - since
    if shards < 1 or span <= 0:
        return None, None
    return shards / span, clips / span


def output_status(output_uri: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Status of the job writing to `output_uri` as one JSON-able dict."""
    from pipeline.writers.location import OutputLocation
    from pipeline.writers.manifest import read_job_file, read_manifest
    from pipeline.writers.summary import build_summary

    location = OutputLocation.of(output_uri, storage_options)
    job = read_job_file(location)
    if job is None:
        raise SpecError("OUTPUT", f"{output_uri} has no job.json: not a tokenmill output (or not started)")
    records = read_manifest(location)
    summary = _read_summary(location)
    driver = driver_state(location, summary, job.updated_at)
    finished = not driver["running"]
    ended = summary is not None and summary.get("written_at", 0) >= job.updated_at
    quarantined = summary.get("quarantined", []) if ended and summary else []
    totals = build_summary(records, quarantined, {}, job.shards_total)
    this_run = [r for r in records.values() if r.finished_at >= job.updated_at]
    # while running, the rate runs to now (a stalled job shows a falling rate); after, to the last record
    until = max((r.finished_at for r in this_run), default=job.updated_at) if finished else time.time()
    shard_rate, clip_rate = _rates(len(this_run), sum(int(r.stats.get("clips", 0)) for r in this_run),
                                   job.updated_at, until)
    pending = totals["shards_pending"]
    return {
        "output": output_uri,
        "name": job.spec.get("name"),
        **driver,
        "fingerprint": str(job.fingerprint.get("digest", ""))[:12],
        **{k: totals[k] for k in ("shards_total", "shards_done", "shards_failed", "shards_pending",
                                  "samples_total", "samples_ok", "samples_failed", "clips_written",
                                  "tokens_written", "failures_by_reason", "notes_by_reason", "quality")},
        "shards_per_s": shard_rate,
        "clips_per_s": clip_rate,
        "eta_seconds": pending / shard_rate if shard_rate and pending and not finished else None,
        "last_record_at": max((r.finished_at for r in records.values()), default=None),
        "run_started_at": job.updated_at,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def format_status(status: dict[str, Any]) -> str:
    """Human-readable lines of an `output_status` dict."""
    rate = status["shards_per_s"]
    ago = time.time() - status["last_record_at"] if status["last_record_at"] else None
    lines = [
        f"job {status['name']!r} -> {status['output']}  [{status['state']}]  fingerprint {status['fingerprint']}",
        f"shards   {status['shards_done']}/{status['shards_total']} done, {status['shards_failed']} failed, "
        f"{status['shards_pending']} pending",
        f"samples  {status['samples_ok']} ok, {status['samples_failed']} failed (of {status['samples_total']})",
        f"written  {status['clips_written']} clips, {status['tokens_written']} tokens",
        f"rate     {rate * 60:.2f} shards/min, {status['clips_per_s']:.2f} clips/s" if rate else "rate     -",
        f"eta      {_duration(status['eta_seconds'])}    last shard finished {_duration(ago)} ago",
        _driver_line(status),
    ]
    quality = status.get("quality")
    if quality:
        lines.append(f"quality  psnr {quality['psnr_mean']:.2f} dB mean, {quality['psnr_p5']:.2f} p5; ssim "
                     f"{quality['ssim_mean']:.4f} mean, {quality['ssim_p5']:.4f} p5 (over {quality['clips']} sampled clips)")
    for reason, count in sorted(status["failures_by_reason"].items(), key=lambda kv: -kv[1])[:10]:
        lines.append(f"  failed {count:6d}  {reason}")
    return "\n".join(lines)


def _driver_line(status: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status["since"])) if status["since"] else None
    if status["running"]:
        return (f"driver   running since {since}: {status['driver']}, heartbeat "
                f"{_duration(status['heartbeat_age_s'])} ago")
    if status["driver"]:
        return (f"driver   stopped since {since}: {status['driver']} died (no heartbeat for "
                f"{_duration(status['heartbeat_age_s'])}); run the same command to resume")
    if since:
        return f"driver   stopped since {since} ({status['state']})"
    return "driver   stopped (it died before writing a summary); run the same command to resume"


def cli_status(args: argparse.Namespace) -> int:
    from pipeline.writers.storage import parse_storage_options

    status = output_status(args.output, parse_storage_options(args.storage_options))
    if args.json:
        print(json.dumps(status, sort_keys=True))
    else:
        print(format_status(status))
    sys.stdout.flush()
    return 0
