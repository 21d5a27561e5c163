"""The output location's bookkeeping: job.json, manifest records, resume planning.

    prepare_output(spec, fingerprint, shards_total)   create/validate job.json, clean temporaries
    read_manifest(uri)        -> {shard_id: ManifestRecord}   one listing + index + new records
    plan_shards(urls, uri)    -> (todo urls, {shard_id: verified record})
    compact_manifest(uri)     write `_manifest/_index.jsonl.gz` so the next read is one GET

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
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.records import shard_id as make_shard_id
from pipeline.writers import storage
from pipeline.writers.fingerprint import (
    DIGEST,
    describe_differences,
    job_fingerprint,
    resume_differences,
    token_file_metadata,
)
from schemas.config import SpecError
from schemas.jobspec import JobSpec
from schemas.manifest import (
    ERRORS_DIR,
    JOB_FILE,
    MANIFEST_DIR,
    MANIFEST_INDEX,
    TMP_DIR,
    TOKENS_DIR,
    JobFile,
    ManifestRecord,
)

if TYPE_CHECKING:
    from pipeline.readers.sources import InputShard

log = logging.getLogger(__name__)
S = TypeVar("S", str, "InputShard")

__all__ = [
    "prepare_output", "read_job_file", "read_manifest", "plan_shards", "compact_manifest",
    "job_fingerprint", "token_file_metadata",
]

_RECORD_SUFFIX = ".json"
_INDEX_VERSION = 2  # entries: [record file name, "size:stamp" when indexed, record]


def read_job_file(output_uri: str, storage_options: dict[str, Any] | None = None) -> JobFile | None:
    """The output's job.json, or None if the output has none yet."""
    fs, root = storage.get_fs(output_uri, storage_options)
    path = storage.join(root, JOB_FILE)
    if not storage.exists(fs, path):
        return None
    return JobFile.from_dict(json.loads(storage.read_bytes(fs, path)))


def prepare_output(spec: JobSpec, fingerprint: dict[str, Any], shards_total: int) -> None:
    """Create or validate `job.json` for a run, then clean what crashed attempts left behind.

    Raises SpecError (exit 2) naming the differing fields when the output was written with a
    different fingerprint; nothing is written in that case.
    """
    uri, opts = spec.output.uri, spec.output.storage_options
    existing = read_job_file(uri, opts)
    now = time.time()
    if existing is not None:
        diffs = resume_differences(existing.fingerprint, fingerprint, spec)
        if diffs:
            raise SpecError(
                diffs[0][0],
                f"output {uri} holds tokens made with a different job fingerprint "
                f"({describe_differences(diffs)}); write to a new output.uri or remove the old output",
            )
    job = JobFile(spec=spec.redacted(), fingerprint=fingerprint, shards_total=shards_total,
                  created_at=existing.created_at if existing else now, updated_at=now)
    fs, root = storage.get_fs(uri, opts)
    if storage.is_local(fs):
        os.makedirs(root, exist_ok=True)
    storage.put_bytes(fs, storage.join(root, JOB_FILE), json.dumps(job.to_dict(), indent=2).encode())
    clean_output(uri, opts)


def clean_output(output_uri: str, storage_options: dict[str, Any] | None = None) -> dict[str, int]:
    """Remove temporaries and published files that no manifest record points to.

    Run at job start only: a file without a record is what a crashed attempt published before
    its record; it will be redone, and removing it keeps plain directory readers exact.
    """
    fs, root = storage.get_fs(output_uri, storage_options)
    removed = {"temporaries": 0, "orphans": 0}
    for sub in (TOKENS_DIR, ERRORS_DIR, MANIFEST_DIR):
        removed["temporaries"] += storage.remove_tree(fs, storage.join(root, sub, TMP_DIR))
    if storage.is_local(fs):
        removed["temporaries"] += _remove_local_dotfiles(storage.join(root, MANIFEST_DIR))
    records = read_manifest(output_uri, storage_options)
    wanted = {o.path for r in records.values() for o in r.outputs.values()}
    orphans = []
    for sub in (TOKENS_DIR, ERRORS_DIR):
        for name in storage.list_sizes(fs, storage.join(root, sub)):
            if f"{sub}/{name}" not in wanted:
                orphans.append(storage.join(root, sub, name))
    storage.remove_files(fs, orphans)
    removed["orphans"] = len(orphans)
    if any(removed.values()):
        log.info("cleaned %s: %d temporaries, %d unrecorded files", output_uri,
                 removed["temporaries"], removed["orphans"])
    return removed


def _remove_local_dotfiles(directory: str) -> int:
    if not os.path.isdir(directory):
        return 0
    stale = [n for n in os.listdir(directory) if n.startswith(".") and n.endswith(".tmp")]
    for name in stale:
        os.remove(os.path.join(directory, name))
    return len(stale)


def _load(fs: Any, root: str, known: dict[str, ManifestRecord] | None = None,
          ) -> tuple[dict[str, ManifestRecord], dict[str, str]]:
    """(records, record file versions) from one listing, the index, and GETs for what is new.

    An index entry is used only while the listed version ("size:stamp") of its record file is
    unchanged. `known` records (ones the caller has just read) are matched by size alone.
    """
    mdir = storage.join(root, MANIFEST_DIR)
    versions = {n: v for n, v in storage.list_versions(fs, mdir).items() if n.endswith(_RECORD_SUFFIX)}
    cached = _read_index(fs, storage.join(mdir, MANIFEST_INDEX))
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


def read_manifest(output_uri: str, storage_options: dict[str, Any] | None = None) -> dict[str, ManifestRecord]:
    """shard_id -> manifest record, for every record listed under `_manifest/`."""
    fs, root = storage.get_fs(output_uri, storage_options)
    return _load(fs, root)[0]


def compact_manifest(output_uri: str, storage_options: dict[str, Any] | None = None,
                     known: dict[str, ManifestRecord] | None = None) -> int:
    """Write the index of all current records (a cache; records stay). Returns the count.

    Pass the records already in hand (`known`, e.g. from read_manifest) to skip re-reading them.
    """
    fs, root = storage.get_fs(output_uri, storage_options)
    records, versions = _load(fs, root, known)
    entries = [[f"{sid}{_RECORD_SUFFIX}", versions[sid], rec.to_dict()] for sid, rec in sorted(records.items())]
    doc = json.dumps({"version": _INDEX_VERSION, "entries": entries}, separators=(",", ":"))
    data = gzip.compress(doc.encode(), compresslevel=3)
    storage.put_bytes(fs, storage.join(root, MANIFEST_DIR, MANIFEST_INDEX), data)
    return len(records)


def plan_shards(shards: Sequence[S], output_uri: str, storage_options: dict[str, Any] | None = None,
                fingerprint: str | None = None,
                ) -> tuple[list[S], dict[str, ManifestRecord]]:
    """Split input shards into (to do, done). Done = a record whose files are listed at its size.

    `shards`: InputShards (a job's: their id is the identity, wherever they are read from now)
    or bare URLs (id of the URL; the record must name the same URL). Costs three listings
    (`_manifest/`, `tokens/`, `errors/`) and, with an index, one GET — never a request per
    shard. With `fingerprint` (a digest), records made under another fingerprint count as not done.
    """
    fs, root = storage.get_fs(output_uri, storage_options)
    # the three listings are independent: run them side by side (each is paginated on S3)
    with ThreadPoolExecutor(max_workers=3) as pool:
        loading = pool.submit(_load, fs, root)
        listings = {sub: pool.submit(storage.list_sizes, fs, storage.join(root, sub)) for sub in (TOKENS_DIR, ERRORS_DIR)}
        records, _ = loading.result()
        present = {f"{sub}/{name}": size for sub, job in listings.items() for name, size in job.result().items()}
    todo, done = [], {}
    for shard in shards:
        url, sid = (shard, make_shard_id(shard)) if isinstance(shard, str) else (None, shard.id)
        rec = records.get(sid)
        if rec is not None and _verified(rec, url, present, fingerprint):
            done[sid] = rec
        else:
            todo.append(shard)
    return todo, done


def _verified(rec: ManifestRecord, url: str | None, present: dict[str, int], fingerprint: str | None) -> bool:
    if url is not None and rec.source_url != url:
        return False
    if fingerprint is not None and rec.fingerprint != fingerprint:
        return False
    for out in rec.outputs.values():
        if present.get(out.path) != out.size:
            log.warning("shard %s: %s is missing or has the wrong size; redoing it", rec.shard_id, out.path)
            return False
    return True


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    return str(fingerprint[DIGEST])
