"""The output location's bookkeeping: job.json, manifest records, resume planning.

    prepare_output(spec, fingerprint, shards_total)   create/validate job.json, clean temporaries
    read_manifest(where)      -> {shard_id: ManifestRecord}   one listing + index + new records
    plan_output(urls, where)  -> Plan(todo urls, done records, stale records to supersede)
    plan_shards(urls, where)  -> (todo urls, {shard_id: verified record})
    supersede(where, stale)   set damaged records aside so their shards can be redone
    clean_output(where)       remove temporaries and files no record names (holding the lease)
    compact_manifest(where)   write `_manifest/_index.jsonl.gz` so the next read is one GET

`where` is an `OutputLocation` (or a URI plus `storage_options`).

The listing of `_manifest/` is the truth: a record counts only if its object is listed. The
index is a cache of record contents keyed by (name, size:stamp), so reading 100k records costs one
paginated listing plus one GET instead of 100k GETs (measured in bench/bench_manifest.py).
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pipeline.records import shard_id as make_shard_id
from pipeline.writers import storage
from pipeline.writers.fingerprint import (
    DIGEST,
    describe_differences,
    job_fingerprint,
    resume_differences,
    token_file_metadata,
)
from pipeline.writers.location import OutputLocation
from schemas.config import SpecError
from schemas.jobspec import JobSpec
from schemas.manifest import JobFile, ManifestRecord

if TYPE_CHECKING:
    from pipeline.readers.sources import InputShard

log = logging.getLogger(__name__)
S = TypeVar("S", str, "InputShard")

__all__ = [
    "prepare_output", "check_fingerprint", "read_job_file", "read_manifest", "plan_output", "plan_shards",
    "supersede", "clean_output", "compact_manifest", "job_fingerprint", "token_file_metadata", "Plan",
]

Where = OutputLocation | str

_RECORD_SUFFIX = ".json"
_INDEX_VERSION = 2  # entries: [record file name, "size:stamp" when indexed, record]


def read_job_file(where: Where, storage_options: dict[str, Any] | None = None) -> JobFile | None:
    """The output's job.json, or None if the output has none yet."""
    loc = OutputLocation.of(where, storage_options)
    try:
        data = storage.read_bytes(loc.fs, loc.path(loc.JOB))
    except FileNotFoundError:
        return None
    return JobFile.from_dict(json.loads(data))


def check_fingerprint(where: Where, fingerprint: dict[str, Any], spec: JobSpec) -> JobFile | None:
    """The output's job.json (None if new); SpecError (exit 2) naming the differing fields when
    the output was written with a different fingerprint (a Hub revision the spec pins aside).
    Reads only."""
    loc = OutputLocation.of(where, spec.output.storage_options)
    existing = read_job_file(loc)
    if existing is not None:
        diffs = resume_differences(existing.fingerprint, fingerprint, spec)
        if diffs:
            raise SpecError(
                diffs[0][0],
                f"output {loc.uri} holds tokens made with a different job fingerprint "
                f"({describe_differences(diffs)}); write to a new output.uri or remove the old output",
            )
    return existing


def prepare_output(spec: JobSpec, fingerprint: dict[str, Any], shards_total: int,
                   location: OutputLocation | None = None) -> None:
    """Create or validate `job.json` for a run, then clean what crashed attempts left behind.

    Raises SpecError (exit 2) naming the differing fields when the output was written with a
    different fingerprint; nothing is written in that case. A job's driver calls this while
    holding the output's lease (the clean-up removes files no record names).
    """
    loc = location or OutputLocation.of(spec.output.uri, spec.output.storage_options)
    existing = check_fingerprint(loc, fingerprint, spec)
    now = time.time()
    job = JobFile(spec=spec.redacted(), fingerprint=fingerprint, shards_total=shards_total,
                  created_at=existing.created_at if existing else now, updated_at=now)
    if loc.is_local:
        os.makedirs(loc.root, exist_ok=True)
    storage.put_bytes(loc.fs, loc.path(loc.JOB), json.dumps(job.to_dict(), indent=2).encode())
    clean_output(loc)


def clean_output(where: Where, storage_options: dict[str, Any] | None = None) -> dict[str, int]:
    """Remove temporaries and published files that no manifest record names.

    Only the driver holding the output's lease runs this, at the start of a run and again at
    its end once its shard tasks have stopped: a file without a record is what an attempt
    published before it died (or lost), and removing it keeps plain directory readers exact.
    """
    loc = OutputLocation.of(where, storage_options)
    removed = {"temporaries": 0, "orphans": 0}
    for sub in (loc.TOKENS, loc.ERRORS, loc.MANIFEST):
        removed["temporaries"] += storage.remove_tree(loc.fs, loc.tmp_dir(sub))
    if loc.is_local:
        removed["temporaries"] += _remove_local_dotfiles(loc.path(loc.MANIFEST))
    records = read_manifest(loc)
    wanted = {o.path for r in records.values() for o in r.outputs.values()}
    orphans = []
    for sub in (loc.TOKENS, loc.ERRORS):
        for name in storage.list_files(loc.fs, loc.path(sub)):
            if f"{sub}/{name}" not in wanted:
                orphans.append(loc.path(sub, name))
    storage.remove_files(loc.fs, orphans)
    removed["orphans"] = len(orphans)
    if any(removed.values()):
        log.info("cleaned %s: %d temporaries, %d unrecorded files", loc.uri,
                 removed["temporaries"], removed["orphans"])
    return removed


def _remove_local_dotfiles(directory: str) -> int:
    if not os.path.isdir(directory):
        return 0
    stale = [n for n in os.listdir(directory) if n.startswith(".") and n.endswith(".tmp")]
    for name in stale:
        try:
            os.remove(os.path.join(directory, name))
        except FileNotFoundError:
            continue  # its writer finished (or another clean-up was first)
    return len(stale)


def _load(loc: OutputLocation, known: dict[str, ManifestRecord] | None = None,
          ) -> tuple[dict[str, ManifestRecord], dict[str, str]]:
    """(records, record file versions) from one listing, the index, and GETs for what is new.

    An index entry is used only while the listed version ("size:stamp") of its record file is
    unchanged. `known` records (ones the caller has just read) are matched by size alone.
    """
    fs, mdir = loc.fs, loc.path(loc.MANIFEST)
    versions = {n: v for n, v in storage.list_versions(fs, mdir).items() if n.endswith(_RECORD_SUFFIX)}
    cached = _read_index(fs, loc.path(loc.INDEX))
    sized = {f"{rec.shard_id}{_RECORD_SUFFIX}": rec for rec in (known or {}).values()}
    records: dict[str, ManifestRecord] = {}
    missing = []
    for name, version in versions.items():
        entry = cached.get(name)
        if entry is not None and entry[0] == version:
            records[name] = entry[1]
        elif name in sized and str(len(sized[name].to_json_bytes())) == version.split(":", 1)[0]:
            records[name] = sized[name]
        else:
            missing.append(storage.join(mdir, name))
    fetched = storage.read_many(fs, missing)
    with _no_gc():
        for path, data in fetched.items():
            records[path.rsplit("/", 1)[-1]] = ManifestRecord.from_dict(json.loads(data))
    by_id = {r.shard_id: r for r in records.values()}
    return by_id, {records[n].shard_id: v for n, v in versions.items() if n in records}


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Building 100k small objects triggers repeated full GC passes over a growing heap that
    nothing here can free (measured: most of the time of reading an index); pause it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_index(fs: Any, path: str) -> dict[str, tuple[str, ManifestRecord]]:
    try:
        raw = storage.read_bytes(fs, path)
    except FileNotFoundError:
        return {}
    try:
        index = json.loads(gzip.decompress(raw))  # one document: one C-speed parse
    except (OSError, EOFError, ValueError) as exc:
        # the index is only a cache: an unreadable one (older layout, torn write) costs a
        # re-read of the records, never a wrong answer
        log.warning("ignoring unreadable manifest index %s: %s", path, exc)
        return {}
    if not isinstance(index, dict) or int(index.get("version", 0)) != _INDEX_VERSION:
        log.info("ignoring manifest index of another version at %s", path)
        return {}
    with _no_gc():
        return {name: (str(version), ManifestRecord.from_dict(rec)) for name, version, rec in index["entries"]}


def read_manifest(where: Where, storage_options: dict[str, Any] | None = None) -> dict[str, ManifestRecord]:
    """shard_id -> manifest record, for every record listed under `_manifest/`."""
    return _load(OutputLocation.of(where, storage_options))[0]


def compact_manifest(where: Where, storage_options: dict[str, Any] | None = None,
                     known: dict[str, ManifestRecord] | None = None) -> int:
    """Write the index of all current records (a cache; records stay). Returns the count.

    Pass the records already in hand (`known`, e.g. from read_manifest) to skip re-reading them.
    """
    loc = OutputLocation.of(where, storage_options)
    records, versions = _load(loc, known)
    entries = [[f"{sid}{_RECORD_SUFFIX}", versions[sid], rec.to_dict()] for sid, rec in sorted(records.items())]
    doc = json.dumps({"version": _INDEX_VERSION, "entries": entries}, separators=(",", ":"))
    data = gzip.compress(doc.encode(), compresslevel=3)
    storage.put_bytes(loc.fs, loc.path(loc.INDEX), data)
    return len(records)


@dataclass
class Plan(Generic[S]):
    todo: list[S]  # shards (InputShards or URLs, as given) to run
    done: dict[str, ManifestRecord]  # shard_id -> verified record
    stale: dict[str, tuple[ManifestRecord, str]] = field(default_factory=dict)  # shard_id -> (record, why)


def plan_output(shards: Sequence[S], where: Where, storage_options: dict[str, Any] | None = None,
                fingerprint: str | None = None) -> Plan[S]:
    """Split input shards into to do and done; records that do not stand are `stale`.

    `shards`: InputShards (a job's: their id is the identity, wherever they are read from now)
    or bare URLs (id of the URL; the record must name the same URL). A record stands when its
    source URL (bare URLs only) and fingerprint digest (if given) match and each file it names
    is listed with the recorded size (and MD5, where the listing gives one: S3 ETags of simple
    PUTs). A record of a damaged input shard (`shard_error`) does not stand either: the shard
    failed, and the next run tries it again. Costs three listings (`_manifest/`, `tokens/`,
    `errors/`) and, with an index, one GET — never a request per shard.
    """
    loc = OutputLocation.of(where, storage_options)
    # the three listings are independent: run them side by side (each is paginated on S3)
    with ThreadPoolExecutor(max_workers=3) as pool:
        loading = pool.submit(_load, loc)
        listings = {sub: pool.submit(storage.list_files, loc.fs, loc.path(sub)) for sub in (loc.TOKENS, loc.ERRORS)}
        records, _ = loading.result()
        present = {f"{sub}/{name}": f for sub, job in listings.items() for name, f in job.result().items()}
    plan: Plan[S] = Plan([], {})
    for shard in shards:
        url, sid = (shard, make_shard_id(shard)) if isinstance(shard, str) else (None, shard.id)
        rec = records.get(sid)
        why = _why_not_standing(rec, url, present, fingerprint) if rec is not None else "no record"
        if rec is not None and why is None:
            plan.done[sid] = rec
            continue
        plan.todo.append(shard)
        if rec is not None and why is not None:
            plan.stale[sid] = (rec, why)
    return plan


def plan_shards(shards: Sequence[S], where: Where, storage_options: dict[str, Any] | None = None,
                fingerprint: str | None = None,
                ) -> tuple[list[S], dict[str, ManifestRecord]]:
    """(to do, done) of `plan_output`: what a resume would run, without changing anything."""
    plan = plan_output(shards, where, storage_options, fingerprint)
    return plan.todo, plan.done


def _why_not_standing(rec: ManifestRecord, url: str | None, present: dict[str, storage.Listed],
                      fingerprint: str | None) -> str | None:
    if url is not None and rec.source_url != url:
        return f"recorded for another URL ({rec.source_url})"
    if fingerprint is not None and rec.fingerprint != fingerprint:
        return "made under another job fingerprint"
    if rec.stats.get("shard_error"):
        return f"the input shard was damaged ({rec.stats['shard_error']})"
    for out in rec.outputs.values():
        listed = present.get(out.path)
        if listed is None:
            return f"{out.path} is missing"
        if listed.size != out.size:
            return f"{out.path} has {listed.size} bytes, the record says {out.size}"
        if listed.md5 and out.md5 and listed.md5 != out.md5:
            return f"{out.path} has another checksum (MD5 {listed.md5}, the record says {out.md5})"
    return None


def supersede(where: Where, stale: dict[str, tuple[ManifestRecord, str]],
              storage_options: dict[str, Any] | None = None) -> int:
    """Set stale records aside so their shards can be recorded again; returns how many.

    Each record is copied to `_manifest/_superseded/<shard-id>.<attempt-id>.json`, then its
    record and the files it names are deleted (record first: no reader is sent to a file that
    is about to go). Only the driver holding the lease calls this, before any shard task runs.
    """
    loc = OutputLocation.of(where, storage_options)
    for sid, (rec, why) in sorted(stale.items()):
        log.warning("shard %s: its record does not stand (%s); redoing the shard", sid, why)
        aside = loc.path(loc.SUPERSEDED, f"{sid}.{rec.attempt_id or rec.attempt}.json")
        storage.put_bytes(loc.fs, aside, rec.to_json_bytes())
        storage.remove_files(loc.fs, [loc.path(loc.record_file(sid))])
        storage.remove_files(loc.fs, [loc.path(o.path) for o in rec.outputs.values()])
    return len(stale)


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    return str(fingerprint[DIGEST])
