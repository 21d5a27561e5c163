"""Build small, real job outputs for the loader tests with the output side's own writer.

Finished shards are written and published by the output side's own `pipeline.writers.commit.ShardWriter`
(real schema, row grouping, manifest record); an unfinished shard is a token file published
without a record. So the loader reads exactly what a job writes. Ids are chosen by the test, so every id value can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.records import ShardStats, clip_key
from pipeline.writers.commit import ShardWriter
from pipeline.writers.token_files import ClipInfo, ParquetTokenFile, normalise


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
    fmt: str = "parquet",
) -> list[str]:
    """A job output under `root` with one shard per entry of `rows_per_shard`; returns all keys.

    `ids_for(shard, row) -> int array [t, h, w]` overrides the ids; `manifest=False` (or a list)
    leaves some shards without a record, i.e. unfinished; `fmt="webdataset"` writes token tars.
    """
    flags = manifest if isinstance(manifest, list) else [manifest] * len(rows_per_shard)
    keys = []
    for s, count in enumerate(rows_per_shard):
        sid = f"shard{s:03d}-0000abcd"
        writer = ShardWriter(str(root), sid, f"file:///src/{sid}.tar", fmt=fmt) if flags[s] else _BareWriter(root, sid)
        for r in range(count):
            key = clip_key(sid, f"video{r:03d}", 0)
            info = ClipInfo(
                key=key, source_url=f"file:///src/{sid}.tar", sample_key=f"video{r:03d}", clip_index=0,
                start_frame=0, num_frames=1 + 4 * (shape[0] - 1), fps=25.0, height=8 * shape[1],
                width=8 * shape[2], meta=json.dumps({"caption": f"clip {s}/{r}", "shard": s, "row": r}),
            )
            ids = ids_for(s, r) if ids_for else clip_ids(s, r, shape)
            writer.add(info, ids, "test-tokenizer")
            if flags[s]:
                keys.append(key)
        if flags[s]:
            writer.commit(ShardStats(samples_total=count, samples_ok=count, clips=count))
        else:
            writer.close()
    return keys


class _BareWriter:
    """A token file published under its final name without a manifest record (a crashed shard)."""

    def __init__(self, root: Path, sid: str):
        (root / "tokens").mkdir(parents=True, exist_ok=True)
        self.file = ParquetTokenFile(str(root / "tokens" / f"{sid}.parquet"), "discrete", {})

    def add(self, info: ClipInfo, ids: np.ndarray, tokenizer: str) -> None:
        self.file.add(info, normalise(ids, info.key), tokenizer)

    def close(self) -> None:
        self.file.close()
