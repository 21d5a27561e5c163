"""Build small, real job outputs for the loader tests with the output side's own writer.

Token files are written by `pipeline.token_files.ParquetTokenFile` (the real schema, options and
row grouping) and each shard gets a real `schemas.manifest.ManifestRecord`, so the loader reads
exactly what a job writes. Ids are chosen by the test, so every id value can be checked.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from pipeline.records import clip_key
from pipeline.token_files import ClipInfo, ParquetTokenFile, normalise
from schemas.manifest import ManifestRecord, OutputFile


def clip_ids(shard: int, row: int, shape: tuple[int, int, int], vocab: int = 64_000) -> np.ndarray:
    """Deterministic ids for one clip; the first id encodes (shard, row) so tests can identify it."""
    rng = np.random.default_rng(shard * 100_003 + row)
    ids = rng.integers(0, vocab, size=shape, dtype=np.int64)
    return ids


def write_output(
    root: Path,
    rows_per_shard: list[int],
    shape: tuple[int, int, int] = (2, 3, 4),
    ids_for=None,
    manifest: bool | list[bool] = True,
) -> list[str]:
    """A job output under `root` with one shard per entry of `rows_per_shard`; returns all keys.

    `ids_for(shard, row) -> int array [t, h, w]` overrides the ids; `manifest=False` (or a list)
    leaves some shards without a record, i.e. unfinished.
    """
    (root / "tokens").mkdir(parents=True, exist_ok=True)
    (root / "_manifest").mkdir(parents=True, exist_ok=True)
    flags = manifest if isinstance(manifest, list) else [manifest] * len(rows_per_shard)
    keys = []
    for s, count in enumerate(rows_per_shard):
        sid = f"shard{s:03d}-0000abcd"
        rel = f"tokens/{sid}.parquet"
        writer = ParquetTokenFile(str(root / rel), "discrete", {})
        for r in range(count):
            key = clip_key(sid, f"video{r:03d}", 0)
            info = ClipInfo(
                key=key, source_url=f"file:///src/{sid}.tar", sample_key=f"video{r:03d}", clip_index=0,
                start_frame=0, num_frames=1 + 4 * (shape[0] - 1), fps=25.0, height=8 * shape[1],
                width=8 * shape[2], meta=json.dumps({"caption": f"clip {s}/{r}", "shard": s, "row": r}),
            )
            ids = ids_for(s, r) if ids_for else clip_ids(s, r, shape)
            writer.add(info, normalise(ids, key), "test-tokenizer")
            if flags[s]:
                keys.append(key)
        writer.close()
        if flags[s]:
            _write_record(root, sid, rel, count)
    return keys


def _write_record(root: Path, sid: str, rel: str, rows: int) -> None:
    size = os.path.getsize(root / rel)
    record = ManifestRecord(
        shard_id=sid, source_url=f"file:///src/{sid}.tar", attempt=1,
        outputs={"tokens": OutputFile(rel, size, "sha256:unused", rows)},
        stats={}, fingerprint="test", finished_at=time.time(), started_at=time.time(),
    )
    (root / "_manifest" / f"{sid}.json").write_text(json.dumps(record.to_dict()))
