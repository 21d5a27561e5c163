"""`tokenmill run JOB.yaml`: plan, dispatch shards to Ray, summarise.

    load + validate the spec (exit 2, nothing written, on any error)
    -> Hub repo ids pinned to the commit they resolve to now (fetched on the driver)
    -> tokenizer config + weights hash (on the driver, CPU) -> clip shape check -> fingerprint
    -> the output's lease (exit 2 naming the holder if another driver is alive)
    -> job.json (refuses a mismatching resume) -> clean-up -> plan: shard URLs minus records
       that stand; damaged records superseded
    -> Ray (embedded, or the cluster at --address / RAY_ADDRESS) -> tokenizer actors
    -> ShardDispatcher hands shards to shard tasks -> clean-up -> summary.json -> exit 0, or 1
       if any shard failed, or 128 + signal after a clean stop (SIGTERM 143, SIGINT 130)

Nothing here depends on driver memory surviving: the manifest is the truth, so a killed driver
loses only time and the same command resumes (taking the dead driver's lease over).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from jobs.preflight import TokenizerInfo, check_clip_shape, probe_tokenizer, resolve_device
from jobs.stop import StopRequest
from schemas.jobspec import JobSpec, load_job_spec

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
    did_work: bool = True
    message: str = ""  # the one line a stopped run ends with


def _batch_size(spec: JobSpec, ready: list[dict[str, Any] | None]) -> int:
    """tokenizer.batch_size, or for auto the smallest that a started actor's memory probe chose."""
    if spec.tokenizer.batch_size != "auto":
        return int(spec.tokenizer.batch_size)
    from jobs.batch_encoder import AUTO_CPU_BATCH

    sizes = [int(st["batch_size"]) for st in ready if st and st.get("batch_size")]
    size = min(sizes) if sizes else AUTO_CPU_BATCH
    log.info("tokenizer.batch_size auto: %d clips per batch", size)
    return size


def _shard_job(spec: JobSpec, info: TokenizerInfo, fingerprint: dict[str, Any], batch_size: int) -> Any:
    from jobs.shard_task import ShardJob
    from pipeline.readers.clips import Grid
    from pipeline.writers.manifest import token_file_metadata
    from pipeline.writers.token_files import optional_columns

    return ShardJob(
        output_uri=spec.output.uri,
        fmt=spec.output.format,
        output_storage_options=dict(spec.output.storage_options),
        input_storage_options=dict(spec.input.storage_options),
        clips=spec.clips,
        tokenizer_name=info.name,
        batch_size=batch_size,
        max_batches_in_flight=spec.resources.max_batches_in_flight,
        file_metadata=token_file_metadata(fingerprint, info.config, info.weights_hash),
        limits=spec.limits,
        grid=Grid(info.temporal, info.spatial),
        optional_columns=optional_columns(spec.clips, spec.quality),
        sample_rate=spec.quality.sample_rate,
    )


def _dispatch(spec: JobSpec, info: TokenizerInfo, fingerprint: dict[str, Any], todo: list[Any],
              shards_total: int, shards_done: int, show_progress: bool, stop: StopRequest,
              ) -> tuple[Any, list[dict], dict]:
    """Start actors, run every todo shard through the dispatcher; returns (result, actor stats, placement).

    Each dispatcher tick also lets the actor pool follow the cluster (jobs.pool): new actors on
    GPU nodes that joined, a roster without actors whose node left, decode slots re-counted."""
    import ray

    from jobs import placement as pl
    from jobs.dispatch import ShardDispatcher
    from jobs.pool import ActorPool, ShardLauncher
    from jobs.progress import Progress
    from jobs.shard_task import run_shard

    place = pl.plan_placement(spec)
    settings = replace(pl.actor_settings(spec, place), name=info.load_name, checkpoint=info.load_checkpoint)
    pool = ActorPool(settings, spec.resources, place, f"{spec.name}-{uuid.uuid4().hex[:6]}",
                     cpus_per_task=spec.clips.decoder_threads)
    progress = None
    try:
        pool.start()
        batch_size = _batch_size(spec, [m.stats for m in pool.members if m.answered])
        # a shard task reserves the CPUs its decoder uses (the decode child runs decoder_threads threads)
        launcher = ShardLauncher(ray.remote(run_shard), {"num_cpus": spec.clips.decoder_threads, "max_retries": 0},
                                 _shard_job(spec, info, fingerprint, batch_size), pool)
        progress = Progress(spec.name, shards_total, shards_done, pool.stats, show_progress)
        cap = max(1, len(todo))

        def tick(result: Any, running: int) -> None:
            if pool.refresh():
                launcher.recount()
                dispatcher.max_in_flight = min(pool.decode_slots, cap)
            progress.tick(result, running)

        dispatcher = ShardDispatcher(launcher, max_in_flight=min(pool.decode_slots, cap),
                                     max_attempts=spec.retries.max_attempts, on_tick=tick,
                                     stop=stop, stop_grace_s=spec.retries.stop_grace_s)
        launcher.running = dispatcher.running
        # each attempt learns the faults earlier attempts met (the same one twice is the input's)
        launcher.known_faults = dispatcher.known_faults
        ready = time.time()
        result = dispatcher.run(todo)
        dispatch_seconds = time.time() - ready
        final = pool.final_stats()
        progress.finish(result, final)
        actor_stats = [dict(st, actor=i) for i, st in enumerate(final)]
    finally:
        if progress is not None:
            progress.close()
        pool.close()
    extra = {"placement": {**place.__dict__, "actors_started": len(pool.members),
                           "decode_workers_final": pool.decode_slots},
             "dispatch_seconds": dispatch_seconds, "batch_size": batch_size}
    return result, actor_stats, extra


def _summarise(spec: JobSpec, location: Any, shards: list[Any], quarantined: list[dict[str, Any]],
               started: float, extra: dict[str, Any], status: str = "finished") -> dict[str, Any]:
    """summary.json from the manifest (the truth), not from driver memory."""
    from pipeline.writers.dataset_card import write_card
    from pipeline.writers.file_index import write_file_index
    from pipeline.writers.manifest import compact_manifest, read_manifest
    from pipeline.writers.summary import build_summary, write_summary

    wanted = {s.id for s in shards}
    everything = read_manifest(location)
    records = {k: r for k, r in everything.items() if k in wanted}
    timings = {"wall_seconds": time.time() - started}
    summary = build_summary(records, quarantined, timings, shards_total=len(shards), started_at=started,
                            status=status)
    summary.update(extra)
    summary["frame_bytes"] = _frame_bytes(records.values())
    write_summary(location, summary)
    compact_manifest(location, known=records)
    write_card(location.uri, location.storage_options, spec.name, spec.output.format, summary)
    if status == "finished":
        # every attempt has stopped and clean-up left only recorded files: loaders may plan from
        # the file index alone until the next run rewrites job.json
        write_file_index(location.uri, everything, location.storage_options)
    return summary


def _frame_bytes(records: Any) -> dict[str, int]:
    """Bytes of decoded frames the shard tasks sent to actors on their own node and on others."""
    total = {"same_node": 0, "other_node": 0}
    for record in records:
        for where, nbytes in (record.stats.get("frame_bytes") or {}).items():
            total[where] = total.get(where, 0) + int(nbytes)
    return total


def run_job(spec: JobSpec, address: str | None = None, show_progress: bool = False,
            stop: StopRequest | None = None) -> RunOutcome:
    """Run `spec` to completion; raises SpecError (before writing anything) for an invalid job
    and LeaseHeld (nothing written) when another live driver writes to the output."""
    from pipeline.readers.sources import resolve_shards
    from pipeline.writers.lease import OutputLease
    from pipeline.writers.location import OutputLocation
    from pipeline.writers.manifest import check_fingerprint, job_fingerprint

    started = time.time()
    stop = stop or StopRequest()
    stop.install()
    try:
        spec = resolve_device(spec, address)
        info = probe_tokenizer(spec)
        check_clip_shape(spec, info)
        shards = resolve_shards(spec.input.shards, spec.input.storage_options)
        fingerprint = job_fingerprint(spec, info.config, info.weights_hash, revision=info.revision)
        location = OutputLocation.of(spec.output.uri, spec.output.storage_options)
        check_fingerprint(location, fingerprint, spec)  # a refused resume writes nothing, not even a lease
        lease = OutputLease(location, spec.retries.lease_timeout_s)
        lease.acquire()
        lease.start_heartbeat()
        try:
            return _run_leased(spec, address, show_progress, stop, lease, info, fingerprint, shards, started)
        finally:
            lease.release()
    finally:
        stop.restore()


def _run_leased(spec: JobSpec, address: str | None, show_progress: bool, stop: StopRequest, lease: Any,
                info: TokenizerInfo, fingerprint: dict[str, Any], shards: list[Any], started: float) -> RunOutcome:
    from pipeline.writers.manifest import (
        clean_output,
        fingerprint_digest,
        plan_output,
        prepare_output,
        supersede,
    )

    location = lease.location
    def lost() -> None:  # the output is another driver's now: no grace, stop at once
        stop.request("lease lost")
        stop.hurry.set()

    lease.on_lost = lost
    prepare_output(spec, fingerprint, len(shards), location)
    plan = plan_output(shards, location, fingerprint=fingerprint_digest(fingerprint))
    supersede(location, plan.stale)
    if not plan.todo:
        print(f"nothing to do: all {len(shards)} shards in {spec.output.uri} are already done", file=sys.stderr)
        summary = _summarise(spec, location, shards, [], started, {"resumed": True, "shards_run": 0})
        return RunOutcome(_exit_code(summary), summary, did_work=False)
    if plan.done:
        print(f"resuming: {len(plan.done)} of {len(shards)} shards already done, {len(plan.todo)} to go",
              file=sys.stderr)
    if stop.requested:
        return _stopped(spec, location, shards, started, stop, lease, {})
    started_ray = False
    try:
        started_ray = _connect(address, stop)
        lease.renew(ray_job_id=_ray_job_id())
        result, actor_stats, extra = _dispatch(spec, info, fingerprint, plan.todo, len(shards), len(plan.done),
                                               show_progress, stop)
    except Exception as exc:
        # summary.json is written at the end of every run, a crashed one included
        _summarise(spec, location, shards, [], started, {"error": f"{type(exc).__name__}: {exc}"}, status="failed")
        raise
    finally:
        if started_ray:
            _shutdown_ray()
    extra.update({"actors": actor_stats, "retries": result.retries, "speculative_runs": result.speculative,
                  "shards_run": len(result.records), "resumed": bool(plan.done)})
    if stop.requested:
        return _stopped(spec, location, shards, started, stop, lease, extra, result.quarantined)
    clean_output(location)  # every attempt has stopped: only recorded files stay
    summary = _summarise(spec, location, shards, result.quarantined, started, extra)
    return RunOutcome(_exit_code(summary), summary)


def _connect(address: str | None, stop: StopRequest) -> bool:
    """Connect to Ray, then take SIGTERM/SIGINT back from the handlers ray.init installs."""
    from jobs import placement as pl

    try:
        return pl.connect(address)
    except SystemExit:  # Ray's own SIGTERM handler (sys.exit) fired while it was starting
        stop.request("SIGTERM", 15)
        return True
    finally:
        stop.install()


def _ray_job_id() -> str | None:
    import ray

    try:
        return str(ray.get_runtime_context().get_job_id())
    except Exception:  # noqa: BLE001 - informational
        return None


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()


def _stopped(spec: JobSpec, location: Any, shards: list[Any], started: float, stop: StopRequest, lease: Any,
             extra: dict[str, Any], quarantined: list[dict[str, Any]] | None = None) -> RunOutcome:
    """The end of a run stopped by a signal (or by losing its lease to another driver)."""
    from pipeline.writers.lease import read_lease
    from pipeline.writers.manifest import clean_output

    if lease.lost.is_set():
        # the output is another driver's now: leave its files and its summary alone
        current = read_lease(location)
        holder = f"pid {current[0].pid} on {current[0].host}" if current else "another driver"
        message = (f"stopped: {holder} took over {spec.output.uri} (this driver's heartbeat was late "
                   "or its lease was removed); that run continues the job")
        return RunOutcome(1, {}, message=message)
    clean_output(location)
    summary = _summarise(spec, location, shards, quarantined or [], started, extra, status="interrupted")
    message = (f"interrupted: {summary.get('shards_done', 0)} of {len(shards)} shards done; "
               "run the same command to resume")
    return RunOutcome(stop.exit_code, summary, message=message)


def _exit_code(summary: dict[str, Any]) -> int:
    return 1 if summary.get("shards_failed", 0) or summary.get("quarantined") else 0


def _report(spec: JobSpec, outcome: RunOutcome) -> None:
    if outcome.message:
        print(f"tokenmill run: {outcome.message}", file=sys.stderr)
        return
    s = outcome.summary
    print(f"tokens: {spec.output.uri.rstrip('/')}/tokens/")
    print(
        f"summary: shards {s.get('shards_done', 0)}/{s.get('shards_total', 0)} done, "
        f"{s.get('shards_failed', 0)} failed; samples {s.get('samples_ok', 0)} ok, "
        f"{s.get('samples_failed', 0)} failed; clips_written={s.get('clips_written', 0)} "
        f"tokens_written={s.get('tokens_written', 0)}"
    )
    for q in s.get("quarantined", []) or []:
        print(f"tokenmill run: shard {q.get('source_url')} failed permanently: {q.get('reason')}", file=sys.stderr)
    if outcome.exit_code == 1:
        print(f"tokenmill run: some shards failed; see {spec.output.uri.rstrip('/')}/summary.json", file=sys.stderr)


def cli_run(args: argparse.Namespace) -> int:
    from jobs.placement import ActorStartError
    from pipeline.writers.lease import LeaseHeld

    spec = load_job_spec(args.spec, args.overrides)
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    show = not getattr(args, "no_progress", False) and sys.stderr.isatty()
    try:
        outcome = run_job(spec, address=address, show_progress=show)
    except LeaseHeld as exc:
        print(f"tokenmill run: {exc}", file=sys.stderr)
        return 2
    except ActorStartError as exc:
        print(f"tokenmill run: {exc}", file=sys.stderr)
        return 1
    _report(spec, outcome)
    return outcome.exit_code
