"""Who reads which rows, in which order: the deterministic plan behind `TokenDataset`.

Vocabulary used here and in `pipeline.loader.dataset`:

    unit      one Parquet row group of one token file (the smallest thing read at once)
    consumer  one reader of the data: a rank, or one DataLoader worker of a rank
    position  the index of a row in one consumer's stream, 0 .. n-1 in reading order
    segment   a row range [start, stop) of one unit, assigned to one consumer

An epoch's plan is a pure function of (units, seed, epoch, world size, workers): the unit order
is shuffled with a seed shared by all ranks, the concatenated rows are cut into contiguous,
balanced row ranges (ranks first, then each rank's workers), so every row goes to exactly one
consumer even when shard or row-group counts do not divide evenly. Inside a consumer a bounded
shuffle buffer reorders positions; `PositionShuffler` works on positions only, so a resume can
replay it to any point without reading data.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    """One row group of one token file."""

    file: int  # index into the dataset's file list
    row_group: int
    num_rows: int


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of units[unit], read by one consumer."""

    unit: int
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


def derive_seed(*parts: object) -> int:
    """A 64-bit seed from any parts; stable across processes and Python versions (unlike hash())."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def unit_order(num_units: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The order units are concatenated in for one epoch; identical on every rank."""
    order = list(range(num_units))
    if shuffle:
        random.Random(derive_seed("units", seed, epoch)).shuffle(order)
    return order


def split_range(total: int, parts: int, index: int) -> tuple[int, int]:
    """Balanced contiguous slice `index` of `parts` over [0, total): sizes differ by at most one."""
    if not 0 <= index < parts:
        raise ValueError(f"index {index} is outside 0..{parts - 1}")
    base, extra = divmod(total, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def consumer_range(total: int, rank: int, world_size: int, worker: int, num_workers: int) -> tuple[int, int]:
    """Global row range of one consumer: the rank's slice first, then the worker's slice of that.

    Splitting ranks before workers keeps a rank's rows independent of how many workers it uses.
    """
    lo, hi = split_range(total, world_size, rank)
    wlo, whi = split_range(hi - lo, num_workers, worker)
    return lo + wlo, lo + whi


def consumer_sizes(total: int, rank: int, world_size: int, num_workers: int) -> list[int]:
    """Number of rows each worker of `rank` reads in an epoch."""
    sizes = []
    for worker in range(num_workers):
        lo, hi = consumer_range(total, rank, world_size, worker, num_workers)
        sizes.append(hi - lo)
    return sizes


def segments_for(units: Sequence[Unit], order: Sequence[int], lo: int, hi: int) -> list[Segment]:
    """The segments covering global rows [lo, hi) of the units concatenated in `order`."""
    segments = []
    offset = 0
    for u in order:
        n = units[u].num_rows
        start, stop = max(lo - offset, 0), min(hi - offset, n)
        if start < stop:
            segments.append(Segment(u, start, stop))
        offset += n
        if offset >= hi:
            break
    return segments


class PositionShuffler:
    """A bounded shuffle buffer over positions 0..n-1, driven by a seeded RNG.

    `fill()` admits the next positions until the buffer holds `size` (or the stream ends) and
    returns them, so the caller can read their rows; `take()` then removes one at random.
    With size <= 1 the order is the reading order. Replaying `fill(); take()` k times without
    reading rows reproduces the exact buffer of an uninterrupted run after k items.
    """

    def __init__(self, n: int, size: int, seed: int):
        self.n = n
        self.size = max(size, 1)
        self.cursor = 0  # next position to admit
        self.buffer: list[int] = []
        self._rng = random.Random(seed)

    def fill(self) -> range:
        count = min(self.size - len(self.buffer), self.n - self.cursor)
        admitted = range(self.cursor, self.cursor + max(count, 0))
        self.buffer.extend(admitted)
        self.cursor += len(admitted)
        return admitted

    def take(self) -> int | None:
        if not self.buffer:
            return None
        if self.size == 1:
            return self.buffer.pop()
        j = self._rng.randrange(len(self.buffer))
        # swap-remove keeps take() O(1); the order it induces is still a pure function of the seed
        self.buffer[j], self.buffer[-1] = self.buffer[-1], self.buffer[j]
        return self.buffer.pop()

    def skip(self, count: int) -> None:
        """Advance as if `count` items had been taken (no rows read)."""
        for _ in range(count):
            self.fill()
            if self.take() is None:
                raise ValueError(f"cannot skip {count} items: this stream has only {self.n}")


def worker_progress(sizes: Sequence[int], batch_size: int, batches: int) -> tuple[list[int], int]:
    """Samples each DataLoader worker has delivered after `batches` batches, and who is next.

    A DataLoader over an IterableDataset (in_order=True, drop_last=False) takes batches from its
    workers round-robin, skipping workers that have run out; each worker batches its own stream,
    so its last batch may be short. Returns (samples consumed per worker, worker of the next batch).
    """
    remaining = [-(-s // batch_size) for s in sizes]  # batches each worker will produce
    done = [0] * len(sizes)
    nxt = 0
    for _ in range(batches):
        active = [w for w in range(len(sizes)) if done[w] < remaining[w]]
        if not active:
            raise ValueError(f"{batches} batches is more than this epoch holds ({sum(remaining)})")
        while done[nxt] >= remaining[nxt]:
            nxt = (nxt + 1) % len(sizes)
        done[nxt] += 1
        nxt = (nxt + 1) % len(sizes)
    consumed = [min(d * batch_size, s) for d, s in zip(done, sizes, strict=True)]
    return consumed, nxt
