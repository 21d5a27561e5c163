"""Reading speed of TokenDataset against plain pyarrow on the same files, and the cost of a resume.

    python bench/bench_loader.py [--shards 8] [--clips 250] [--grid 5 32 32]

Writes a synthetic job output (real ShardWriter files, random uint16 ids) to a temporary folder,
then reports clips/s for: pyarrow reading every file whole (baseline), TokenDataset in written
order, TokenDataset shuffled (buffer 256), and TokenLoader with 2 workers; plus the time to the
first item after restoring a mid-epoch state, next to the time to the first item of a fresh
epoch. Speeds are printed as ratios to the baseline measured in the same run (shared machines
are noisy; compare ratios, not absolute numbers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.loader import TokenDataset, TokenLoader  # noqa: E402
from pipeline.records import ShardStats  # noqa: E402
from pipeline.writers.commit import ShardWriter  # noqa: E402
from pipeline.writers.token_files import ClipInfo  # noqa: E402


def write_job(root: Path, shards: int, clips: int, grid: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    for s in range(shards):
        sid = f"bench{s:04d}-00000000"
        writer = ShardWriter(str(root), sid, f"file:///bench/{sid}.tar")
        for c in range(clips):
            info = ClipInfo(f"{sid}.v{c}.0000", "file:///bench", f"v{c}", 0, 0, 17, 25.0, 256, 256,
                            '{"caption": "a clip"}')
            writer.add(info, rng.integers(0, 64_000, size=grid, dtype=np.int64), "bench")
        writer.commit(ShardStats(samples_total=clips, samples_ok=clips, clips=clips))


def rate(label: str, count: int, seconds: float, base: float | None) -> float:
    per_s = count / seconds
    ratio = f"  ({per_s / base:.2f}x baseline)" if base else ""
    print(f"{label:<42} {per_s:9.0f} clips/s{ratio}")
    return per_s


def baseline(root: Path) -> tuple[int, float]:
    """Every file read whole with pyarrow and cut into per-clip uint16 arrays."""
    start, count = time.perf_counter(), 0
    for path in sorted((root / "tokens").glob("*.parquet")):
        column = pq.read_table(path, columns=["tokens"]).column("tokens").combine_chunks()
        values, offsets = column.values.to_numpy(), column.offsets.to_numpy()
        count += sum(1 for i in range(len(column)) if values[offsets[i] : offsets[i + 1]].size)
    return count, time.perf_counter() - start


def timed(iterable) -> tuple[int, float]:
    start, count = time.perf_counter(), 0
    for batch in iterable:
        count += len(batch) if isinstance(batch, list) else 1
    return count, time.perf_counter() - start


def resume_cost(uri: str, total: int) -> None:
    fresh = TokenDataset(uri, seed=0, shuffle_buffer=256)
    start = time.perf_counter()
    next(iter(fresh))
    first = time.perf_counter() - start
    ds = TokenDataset(uri, seed=0, shuffle_buffer=256)
    it = iter(ds)
    for _ in range(total // 2):
        next(it)
    state = ds.state_dict()
    restored = TokenDataset(uri, seed=0, shuffle_buffer=256)
    restored.load_state_dict(state)
    start = time.perf_counter()
    next(iter(restored))
    print(f"first item: fresh epoch {first * 1e3:.0f} ms, after restoring at item {total // 2}: "
          f"{(time.perf_counter() - start) * 1e3:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--clips", type=int, default=250)
    p.add_argument("--grid", type=int, nargs=3, default=[5, 32, 32])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_job(root, args.shards, args.clips, tuple(args.grid))
        total = args.shards * args.clips
        print(f"{total} clips of {args.grid} ids in {args.shards} shards")
        base = rate("pyarrow, whole files (baseline)", *baseline(root), None)
        rate("TokenDataset, written order", *timed(TokenDataset(str(root), shuffle=False)), base)
        rate("TokenDataset, shuffled (buffer 256)", *timed(TokenDataset(str(root), seed=0)), base)
        loader = TokenLoader(TokenDataset(str(root), seed=0), batch_size=16, num_workers=2, collate_fn=list)
        rate("TokenLoader, 2 workers, batches of 16", *timed(loader), base)
        resume_cost(str(root), total)


if __name__ == "__main__":
    main()
