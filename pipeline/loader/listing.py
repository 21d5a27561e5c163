"""What a job output holds, clip by clip: `tokenmill ls OUTPUT` and key lookup for `preview`.

    list_clips(uri)            -> [{key, sample_key, source_url, token_shape | latent_shape, ...}]
    resolve_key(uri, text)     -> the one clip key that `text` names (a key, a prefix, a sample key)

Only records in `_manifest/` count (what readers trust); Parquet files are read for their small
columns only, never the ids, so listing a large output costs one column read per token file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from pipeline.writers import storage
from schemas.config import SpecError

LISTED = ("key", "sample_key", "source_url", "clip_index", "start_frame", "num_frames", "height", "width")


def _parquet_rows(fs: Any, path: str) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as fh:
        names = set(pq.read_schema(fh).names)
        shape = "token_shape" if "token_shape" in names else "latent_shape"
        table = pq.read_table(fh, columns=[c for c in (*LISTED, shape) if c in names])
    yield from table.to_pylist()


def _tar_rows(fs: Any, path: str) -> Iterator[dict[str, Any]]:
    import tarfile

    with fs.open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".json"):
                extracted = tar.extractfile(member)
                fields = json.loads(extracted.read()) if extracted else {}
                yield {k: fields.get(k) for k in (*LISTED, "token_shape", "latent_shape") if k in fields}


def list_clips(uri: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every clip of every finished shard, in shard then clip order."""
    from pipeline.writers.manifest import read_manifest

    fs, root = storage.get_fs(uri, storage_options)
    rows: list[dict[str, Any]] = []
    for _, record in sorted(read_manifest(uri, storage_options).items()):
        tokens = record.outputs.get("tokens")
        if tokens is None:
            continue
        reader = _parquet_rows if record.format == "parquet" else _tar_rows
        rows.extend(reader(fs, storage.join(root, tokens.path)))
    return rows


def resolve_key(uri: str, text: str, storage_options: dict[str, Any] | None = None) -> str:
    """The clip `text` names: an exact clip key, else the first clip whose key starts with it, else
    the first clip of the sample whose `sample_key` it is."""
    clips = list_clips(uri, storage_options)
    keys = [c["key"] for c in clips]
    if text in keys:
        return text
    matches = [k for k in keys if k.startswith(text)] or [c["key"] for c in clips if c.get("sample_key") == text]
    if not matches:
        sample = ", ".join(keys[:5]) or "none (no finished shard)"
        raise SpecError("--key", f"no clip key, key prefix or sample key {text!r} in {uri}; "
                                 f"`tokenmill ls {uri}` lists them (first keys: {sample})")
    return matches[0]


def format_clip(row: dict[str, Any]) -> str:
    shape = row.get("token_shape") or row.get("latent_shape") or []
    grid = "x".join(str(int(s)) for s in shape)
    return (f"{row['key']}\t{grid}\t{row.get('num_frames')}x{row.get('height')}x{row.get('width')}"
            f"\t{row.get('start_frame')}\t{row.get('source_url')}")


def cli_ls(args: argparse.Namespace) -> int:
    options = storage.parse_storage_options(getattr(args, "storage_options", []) or [])
    from pipeline.writers.manifest import read_job_file

    if read_job_file(args.output, options) is None:
        raise SpecError("OUTPUT", f"{args.output} has no job.json: not a tokenmill job output (or not started)")
    rows = list_clips(args.output, options)
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    else:
        print("key\ttoken_shape\tclip (frames x h x w)\tstart_frame\tsource")
        for row in rows:
            print(format_clip(row))
    sys.stdout.flush()
    return 0
