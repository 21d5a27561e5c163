"""Start-up of one loader rank (`TokenDataset(...)` until it knows every row group) over a large
synthetic job output, locally and on S3 (moto), before and after ranks read the file index.

    python bench/bench_loader_startup.py --shards 100000            # local disk
    python bench/bench_loader_startup.py --shards 5000 --s3         # moto S3 server on 127.0.0.1
    python bench/bench_loader_startup.py --shards 100000 --s3 --index-only

One real token file (ShardWriter, 2 row groups) is copied to N shard names, with N manifest
records, the manifest index and job.json. Timed, each on the same output:
  before    records without row groups, no file index: list `_manifest/`, read the manifest
            index, open every token file's footer (what every rank did before)
  listed    records with row groups, no file index (a run in progress): listing + manifest index
  indexed   `_manifest/_files.parquet` written by the run's end: job.json + file index, 2 GETs
`--index-only` uploads only what the indexed start-up reads (job.json and the file index; the
token files are not touched before iteration): for moto, whose listing cost grows with the
square of the bucket size, and whose PUTs make a 100k-shard bucket take an hour to build here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_manifest import moto, write_objects  # noqa: E402 - beside this file

from pipeline.loader import TokenDataset  # noqa: E402
from pipeline.records import ShardStats  # noqa: E402
from pipeline.writers import storage  # noqa: E402
from pipeline.writers.commit import ShardWriter, record_path  # noqa: E402
from pipeline.writers.file_index import write_file_index  # noqa: E402
from pipeline.writers.location import OutputLocation  # noqa: E402
from pipeline.writers.manifest import compact_manifest, read_manifest  # noqa: E402
from pipeline.writers.token_files import ClipInfo  # noqa: E402
from schemas.manifest import JOB_FILE, JobFile, ManifestRecord  # noqa: E402


def template(tmp: str) -> tuple[bytes, ManifestRecord]:
    """One real shard of 300 clips (row groups of 256 + 44): its token file bytes and record."""
    rng = np.random.default_rng(0)
    writer = ShardWriter(tmp, "tpl-00000000", "file:///bench/tpl.tar")
    for c in range(300):
        info = ClipInfo(f"tpl-00000000.v{c}.0000", "file:///bench/tpl.tar", f"v{c}", 0, 0, 9, 25.0, 32, 32, None)
        writer.add(info, rng.integers(0, 64_000, size=(3, 2, 2), dtype=np.int64), "bench")
    record = writer.commit(ShardStats(samples_total=300, samples_ok=300, clips=300))
    with open(os.path.join(tmp, record.outputs["tokens"].path), "rb") as f:
        return f.read(), record


def shard_record(tpl: ManifestRecord, i: int, row_groups: bool) -> ManifestRecord:
    sid = f"shard-{i:07d}-{i:08x}"
    data = tpl.to_dict()
    data.update(shard_id=sid, source_url=f"s3://corpus/videos/shard-{i:07d}.tar")
    tokens = dict(data["outputs"]["tokens"], path=OutputLocation.token_file(sid, tpl.attempt_id, "parquet"))
    if not row_groups:
        tokens.pop("row_groups", None)
    errors = dict(data["outputs"]["errors"], path=OutputLocation.error_file(sid, tpl.attempt_id))
    data["outputs"] = {"tokens": tokens, "errors": errors}
    return ManifestRecord.from_dict(data)


def build(fs: Any, root: str, n: int, tpl: ManifestRecord, row_groups: bool, token_bytes: bytes | None,
          batch: int = 2000) -> None:
    """N records (and, given their bytes, N token files), written `batch` objects at a time."""
    objects: dict[str, bytes] = {}
    for i in range(n):
        rec = shard_record(tpl, i, row_groups)
        objects[storage.join(root, record_path(rec.shard_id))] = rec.to_json_bytes()
        if token_bytes is not None:
            objects[storage.join(root, rec.outputs["tokens"].path)] = token_bytes
        if len(objects) >= batch or i == n - 1:
            write_objects(fs, objects)
            objects = {}


def write_job_file(fs: Any, root: str, updated_at: float) -> None:
    job = JobFile(spec={}, fingerprint={"digest": "f" * 64}, shards_total=0, created_at=1.7e9, updated_at=updated_at)
    storage.put_bytes(fs, storage.join(root, JOB_FILE), json.dumps(job.to_dict()).encode())


def start_up(uri: str, opts: dict[str, Any], n: int) -> float:
    t0 = time.perf_counter()
    ds = TokenDataset(uri, storage_options=opts or None)
    seconds = time.perf_counter() - t0
    assert len(ds.files) == n and ds.total_samples == 300 * n, (len(ds.files), ds.total_samples)
    return seconds


def run(uri: str, opts: dict[str, Any], n: int, index_only: bool) -> None:
    fs, root = storage.get_fs(uri, opts)
    tmp = tempfile.mkdtemp(prefix="bench-startup-tpl-")
    try:
        token_bytes, tpl = template(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results: dict[str, float] = {}
    t0 = time.perf_counter()
    if index_only:
        write_job_file(fs, root, 2.0)
        records = {r.shard_id: r for r in (shard_record(tpl, i, True) for i in range(n))}
        assert write_file_index(uri, records, opts)
        results["build"] = time.perf_counter() - t0
        results["indexed"] = start_up(uri, opts, n)
    else:
        build(fs, root, n, tpl, row_groups=False, token_bytes=token_bytes)
        write_job_file(fs, root, 1.0)
        compact_manifest(uri, opts)
        results["build"] = time.perf_counter() - t0
        results["before"] = start_up(uri, opts, n)
        build(fs, root, n, tpl, row_groups=True, token_bytes=None)
        compact_manifest(uri, opts)
        results["listed"] = start_up(uri, opts, n)
        assert write_file_index(uri, read_manifest(uri, opts), opts)
        results["indexed"] = start_up(uri, opts, n)
    base = results.get("before")
    print(f"{'where':6} {'shards':>8} {'start-up':10} {'seconds':>9} {'vs before':>10}")
    for label, seconds in results.items():
        ratio = f"{seconds / base:9.3f}x" if base and label != "build" else ""
        print(f"{'s3' if opts else 'local':6} {n:8d} {label:10} {seconds:9.2f} {ratio:>10}")


@contextlib.contextmanager
def location(s3: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    if s3:
        with moto() as opts:
            fs, _ = storage.get_fs("s3://bench", opts)
            fs.mkdir("bench")
            yield "s3://bench/out", opts
        return
    tmp = tempfile.mkdtemp(prefix="bench-startup-")
    try:
        yield os.path.join(tmp, "out"), {}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=100_000)
    ap.add_argument("--s3", action="store_true", help="run against a moto S3 server started here")
    ap.add_argument("--index-only", action="store_true", help="upload only job.json and the file index")
    args = ap.parse_args()
    with location(args.s3) as (uri, opts):
        run(uri, opts, args.shards, args.index_only)


if __name__ == "__main__":
    main()
