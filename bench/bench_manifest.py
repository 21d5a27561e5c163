"""How long resume planning takes over a large synthetic output, locally and on S3 (moto).

    python bench/bench_manifest.py --shards 100000            # local disk
    python bench/bench_manifest.py --shards 100000 --s3       # moto S3 server on 127.0.0.1

Builds an output with N manifest records plus a token and an error object per record (sizes
matching the records), then times:
  records (no index)   read_manifest when every record is its own GET (first run, or a run
                       killed before it wrote an index)
  compact              writing _manifest/_index.jsonl.gz
  records (index)      read_manifest with the index: listing + one GET
  plan (index)         plan_shards over N URLs: three listings + one GET, verifying sizes
and prints each as seconds and as a ratio to the no-index read measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.records import shard_id  # noqa: E402
from pipeline.writers import storage  # noqa: E402
from pipeline.writers.commit import record_path  # noqa: E402
from pipeline.writers.location import OutputLocation  # noqa: E402
from pipeline.writers.manifest import compact_manifest, plan_shards, read_manifest  # noqa: E402
from schemas.manifest import ManifestRecord, OutputFile  # noqa: E402


def synthetic_record(url: str, i: int) -> ManifestRecord:
    sid = shard_id(url)
    return ManifestRecord(
        shard_id=sid, source_url=url, attempt=1,
        outputs={"tokens": OutputFile(OutputLocation.token_file(sid, "a1", "parquet"), 7 + i % 5, "sha256:" + "0" * 64, 300),
                 "errors": OutputFile(OutputLocation.error_file(sid, "a1"), 3 + i % 3, "sha256:" + "1" * 64, 2)},
        stats={"samples_total": 102, "samples_ok": 100, "samples_failed": 2, "clips": 300, "frames": 5100,
               "tokens": 230400, "video_seconds": 204.0, "failures": {"decode:DecodeError": 2},
               "notes": {"too_short": 1}, "seconds": {"read": 1.5, "decode": 20.1, "tokenize": 30.2},
               "shard_error": None},
        fingerprint="f" * 64, finished_at=1.7e9 + i, started_at=1.7e9 + i - 60, worker="node-1:1234",
        attempt_id="a1",
    )


def build(fs: Any, root: str, n: int, batch: int = 2000) -> list[str]:
    urls = [f"s3://corpus/videos/shard-{i:07d}.tar" for i in range(n)]
    objects: dict[str, bytes] = {}
    for i, url in enumerate(urls):
        rec = synthetic_record(url, i)
        objects[storage.join(root, record_path(rec.shard_id))] = json.dumps(rec.to_dict(), sort_keys=True).encode()
        for out in rec.outputs.values():
            objects[storage.join(root, out.path)] = b"x" * out.size
        if len(objects) >= batch or i == n - 1:
            write_objects(fs, objects)
            objects = {}
    return urls


def write_objects(fs: Any, objects: dict[str, bytes]) -> None:
    if storage.is_local(fs):
        for path, data in objects.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    else:
        fs.pipe(objects)  # concurrent PUTs


def timed(label: str, fn: Any, results: dict[str, float]) -> Any:
    t0 = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - t0
    return value


@contextlib.contextmanager
def moto() -> Iterator[dict[str, Any]]:
    from tests.fixtures.net import free_port
    from tests.fixtures.s3 import _moto_server_command, _wait_until_up

    port = free_port()
    proc = subprocess.Popen(_moto_server_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", proc)
        yield {"key": "testing", "secret": "testing", "endpoint_url": f"http://127.0.0.1:{port}"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)  # a server holding 100k+ objects takes a while to exit
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(uri: str, opts: dict[str, Any], n: int) -> None:
    fs, root = storage.get_fs(uri, opts)
    results: dict[str, float] = {}
    urls = timed("build", lambda: build(fs, root, n), results)
    records = timed("records (no index)", lambda: read_manifest(uri, opts), results)
    assert len(records) == n
    timed("compact", lambda: compact_manifest(uri, opts, known=records), results)
    assert len(timed("records (index)", lambda: read_manifest(uri, opts), results)) == n
    todo, done = timed("plan (index)", lambda: plan_shards(urls, uri, opts), results)
    assert not todo and len(done) == n
    base = results["records (no index)"]
    print(f"{'where':6} {'shards':>8} {'step':22} {'seconds':>9} {'vs no-index read':>17}")
    for label, seconds in results.items():
        print(f"{'s3' if opts else 'local':6} {n:8d} {label:22} {seconds:9.2f} {seconds / base:16.3f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=100_000)
    ap.add_argument("--s3", action="store_true", help="run against a moto S3 server started here")
    args = ap.parse_args()
    if args.s3:
        with moto() as opts:
            fs, _ = storage.get_fs("s3://bench", opts)
            fs.mkdir("bench")
            run("s3://bench/out", opts, args.shards)
        return
    tmp = tempfile.mkdtemp(prefix="bench-manifest-")
    try:
        run(os.path.join(tmp, "out"), {}, args.shards)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
