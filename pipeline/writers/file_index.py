"""Write and read `_manifest/_files.parquet`, the loader's index of a finished run's token files
(schema and validity rule: schemas/file_index.py).

    write_file_index(uri, records)   at the end of a run that ended normally (the driver)
    read_file_index(uri)             -> [FileEntry] or None: job.json and the index, two GETs

None means "not valid for the output as it is now" (no index, one from an older run, or records
without row groups): the caller then reads the manifest (a listing) as resume planning does.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.writers import storage
from pipeline.writers.manifest import read_job_file
from schemas.file_index import (
    FILE_INDEX,
    FILE_INDEX_SCHEMA,
    FILE_INDEX_VERSION,
    META_SEALED_FOR,
    META_VERSION,
)
from schemas.manifest import ManifestRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileEntry:
    shard_id: str
    path: str  # relative to output.uri
    checksum: str
    format: str
    row_groups: tuple[int, ...]


def write_file_index(output_uri: str, records: dict[str, ManifestRecord],
                     storage_options: dict[str, Any] | None = None) -> bool:
    """Write the index of `records` (every record of the output), sealed for the current job.json.

    Call only when nothing of the run can still record a shard. Returns False (and writes
    nothing) when some record lacks row groups (written by an older tokenmill) or there is no job.json.
    """
    job = read_job_file(output_uri, storage_options)
    tokens = [(sid, r, r.outputs["tokens"]) for sid, r in sorted(records.items()) if "tokens" in r.outputs]
    if job is None or any(out.row_groups is None for _, _, out in tokens):
        return False
    table = pa.table({
        "shard_id": [sid for sid, _, _ in tokens],
        "path": [out.path for _, _, out in tokens],
        "checksum": [out.checksum for _, _, out in tokens],
        "format": [r.format for _, r, _ in tokens],
        "row_groups": [out.row_groups for _, _, out in tokens],
    }, schema=FILE_INDEX_SCHEMA.with_metadata({META_VERSION: str(FILE_INDEX_VERSION),
                                               META_SEALED_FOR: repr(job.updated_at)}))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    fs, root = storage.get_fs(output_uri, storage_options)
    storage.put_bytes(fs, storage.join(root, FILE_INDEX), sink.getvalue())
    return True


def read_file_index(output_uri: str, storage_options: dict[str, Any] | None = None) -> list[FileEntry] | None:
    """The index's entries if it was sealed for the output's current job.json, else None."""
    fs, root = storage.get_fs(output_uri, storage_options)
    with ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(read_job_file, output_uri, storage_options)
        try:
            data = storage.read_bytes(fs, storage.join(root, FILE_INDEX))
        except FileNotFoundError:
            return None
        job_file = job.result()
    try:
        table = pq.read_table(io.BytesIO(data))
    except (OSError, ValueError, pa.ArrowException) as exc:
        log.warning("ignoring unreadable file index of %s: %s", output_uri, exc)
        return None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if job_file is None or meta.get(META_VERSION) != str(FILE_INDEX_VERSION) \
            or meta.get(META_SEALED_FOR) != repr(job_file.updated_at):
        return None
    columns = table.to_pydict()
    return [FileEntry(sid, path, checksum, fmt, tuple(groups)) for sid, path, checksum, fmt, groups in zip(
        columns["shard_id"], columns["path"], columns["checksum"], columns["format"], columns["row_groups"],
        strict=True)]
