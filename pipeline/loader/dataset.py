"""TokenDataset: a resumable, deterministic, distributed reader of a tokenmill job's output.

    ds = TokenDataset("out/demo", rank=rank, world_size=world, seed=0)
    loader = TokenLoader(ds, batch_size=8, num_workers=2, collate_fn=...)
    for step, batch in enumerate(loader):
        ...
        if step % 100 == 0:
            save(loader.state_dict())        # exact position, including the shuffle buffer
    # later: loader.load_state_dict(saved) continues with exactly the items that would have come

Only shards with a manifest record are read (a shard is either complete or invisible), one
Parquet row group at a time (WebDataset token tars: streamed clip by clip), so memory is bounded
by the shuffle buffer plus one row group.
Each epoch's order is a pure function of (dataset, seed, epoch, world size, workers); see
`pipeline.loader.plan` for how rows are split (no row read twice, none skipped, ranks differ by
at most one row). State is versioned and a restore that would change the sequence (another
dataset, world size, rank, seed, shuffle settings or worker count) is refused with the reason.

State with DataLoader workers: the items live in worker processes, so the state is counted where
batches arrive. `TokenLoader` counts delivered batches; since a DataLoader (in_order=True,
drop_last=False) takes batches from its workers round-robin, that count fixes how many items
each worker delivered and which worker is next. On restore each worker fast-forwards its own
stream (replaying the shuffle on positions, reading only the rows still in the buffer), and
worker ids are rotated so the round-robin restarts at the right worker. Using a plain
DataLoader with num_workers > 0 works for reading but its position cannot be saved.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.loader.plan import (
    PositionShuffler,
    Segment,
    Unit,
    consumer_range,
    consumer_sizes,
    derive_seed,
    segments_for,
    unit_order,
    worker_progress,
)
from pipeline.loader.rows import rows_from_table, rows_from_tar, to_item
from pipeline.writers.file_index import read_file_index
from pipeline.writers.manifest import read_manifest
from pipeline.writers.storage import get_fs
from schemas.tokens import META_TOKENIZER_CONFIG

log = logging.getLogger(__name__)

STATE_FORMAT = "tokenmill.loader.state"
STATE_VERSION = 1


class IncompatibleStateError(ValueError):
    """A saved loader state that cannot continue on this dataset/configuration (says why)."""


@dataclass(frozen=True)
class TokenFile:
    shard_id: str
    path: str  # full path or URL
    rows_per_group: tuple[int, ...]  # a WebDataset tar is one group: it can only be streamed
    checksum: str  # of the whole file, from its manifest record
    format: str = "parquet"  # parquet | webdataset


def _manifest_files(uri: str, storage_options: dict[str, Any] | None) -> tuple[dict[str, TokenFile], set[str]]:
    """(shard id -> its token file, ids whose Parquet row groups only the file's footer knows).

    From the file index alone when the job's last run ended normally and wrote it (job.json and
    `_manifest/_files.parquet`: two GETs, however many shards); otherwise (a run in progress or
    killed, an output from an older tokenmill) from the manifest, as resume planning reads it.
    """
    base = uri.rstrip("/")

    def full(path: str) -> str:
        return path if "://" in path or path.startswith("/") else f"{base}/{path}"

    entries = read_file_index(uri, storage_options)
    if entries is not None:
        return {e.shard_id: TokenFile(e.shard_id, full(e.path), e.row_groups, e.checksum, e.format)
                for e in entries}, set()
    log.info("%s: no file index of the last run; reading the manifest", uri)
    files, unknown = {}, set()
    for shard, record in read_manifest(uri, storage_options).items():
        out = record.outputs["tokens"]
        if out.row_groups is None and record.format == "parquet":
            unknown.add(shard)
        groups = tuple(out.row_groups) if out.row_groups is not None else (out.rows,)
        files[shard] = TokenFile(shard, full(out.path), groups, out.checksum, record.format)
    return files, unknown


def discover(
    uri: str, storage_options: dict[str, Any] | None = None, shards: Sequence[str] | None = None
) -> list[TokenFile]:
    """The token files of a job output (or of the listed shard ids), sorted by shard id.

    Row-group sizes come from the manifest records; only records written before they carried
    them cost a footer read (a small GET each, several at once)."""
    files, unknown = _manifest_files(uri, storage_options)
    if not files:
        raise FileNotFoundError(f"{uri}: no finished shards (no records under _manifest/)")
    if shards is not None:
        missing = sorted(set(shards) - set(files))
        if missing:
            raise KeyError(f"{uri}: no finished shard with id {', '.join(missing)}")
        files = {s: files[s] for s in shards}
    fs, _ = get_fs(uri, storage_options)

    def footer(shard: str) -> TokenFile:
        tf = files[shard]
        if shard not in unknown:
            return tf
        with fs.open(get_fs(tf.path, storage_options)[1], "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
        counts = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        return dataclasses.replace(tf, rows_per_group=counts)

    if not unknown & set(files):
        return [files[s] for s in sorted(files)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(footer, sorted(files)))


def shard_ids(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Ids of the finished shards of a job output, sorted."""
    return sorted(_manifest_files(uri, storage_options)[0])


def fingerprint(files: list[TokenFile]) -> str:
    """Identity of a dataset's contents: shard ids, file checksums, row layout (not where it is stored)."""
    text = json.dumps([[f.shard_id, f.checksum, list(f.rows_per_group)] for f in files])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class TokenDataset(IterableDataset):
    """Items of a tokenmill output (dicts; see `pipeline.loader.rows`), split over ranks and workers.

    `shards` restricts the dataset to those shard ids (e.g. a held-out split); `shard_ids(uri)`
    lists the finished ones.
    """

    def __init__(
        self,
        uri: str,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 256,
        storage_options: dict[str, Any] | None = None,
        epoch: int = 0,
        shards: Sequence[str] | None = None,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size={world_size})")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}")
        self.uri, self.storage_options = uri, storage_options
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.shuffle_buffer, self.epoch = shuffle, shuffle_buffer, epoch
        collecting = gc.isenabled()
        # a 100k-shard output is ~10^5 small objects built at once: paused, the collector does
        # not sweep a heap nothing here frees (3/4 of start-up at 100k shards, measured)
        gc.disable()
        try:
            self.files = discover(uri, storage_options, shards)
            self.units = [
                Unit(f, g, n) for f, tf in enumerate(self.files) for g, n in enumerate(tf.rows_per_group) if n
            ]
            self.total_samples = sum(u.num_rows for u in self.units)
            self.fingerprint = fingerprint(self.files)
        finally:
            if collecting:
                gc.enable()
        self._resume: tuple[list[int], int] | None = None  # (consumed per worker, next worker)
        self._consumed = 0  # items yielded by the in-process iterator this epoch

    # ---- sizes and epochs -------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """Items this rank reads per epoch (ranks differ by at most one)."""
        lo, hi = consumer_range(self.total_samples, self.rank, self.world_size, 0, 1)
        return hi - lo

    def __len__(self) -> int:
        return self.num_samples

    @property
    def tokenizer_config(self) -> dict[str, Any] | None:
        """The tokenizer config the job stored in its Parquet files (vocab_size, levels, ...), or None."""
        for tf in self.files:
            if tf.format == "parquet":
                fs, path = get_fs(tf.path, self.storage_options)
                with fs.open(path, "rb") as handle:
                    metadata = pq.ParquetFile(handle).schema_arrow.metadata or {}
                text = metadata.get(META_TOKENIZER_CONFIG.encode())
                return json.loads(text) if text else None
        return None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order to produce; a new epoch drops any pending resume."""
        if epoch != self.epoch:
            self.epoch, self._resume, self._consumed = epoch, None, 0

    # ---- state ------------------------------------------------------------------------------
    def _base_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "dataset": {"fingerprint": self.fingerprint, "samples": self.total_samples},
            "world_size": self.world_size,
            "rank": self.rank,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_buffer": self.shuffle_buffer,
            "epoch": self.epoch,
        }

    def state_dict(self) -> dict[str, Any]:
        """Position of the in-process iterator (num_workers=0); use TokenLoader with workers."""
        return {**self._base_state(), "num_workers": 0, "consumed": [self._consumed], "next_worker": 0}

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise IncompatibleStateError saying why `state` cannot continue on this dataset."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise IncompatibleStateError(
                f"loader state has format/version {state.get('format')!r}/{state.get('version')!r}; "
                f"this reader understands {STATE_FORMAT!r}/{STATE_VERSION}"
            )
        mine = self._base_state()
        if state["dataset"] != mine["dataset"]:
            raise IncompatibleStateError(
                f"loader state belongs to another dataset: saved over {state['dataset']['samples']} clips "
                f"(fingerprint {state['dataset']['fingerprint']}), {self.uri} now holds "
                f"{self.total_samples} clips (fingerprint {self.fingerprint}); shards were added, "
                "removed or rewritten, so the saved position has no meaning here"
            )
        for name in ("world_size", "rank", "seed", "shuffle", "shuffle_buffer"):
            if state[name] != mine[name]:
                raise IncompatibleStateError(
                    f"loader state was saved with {name}={state[name]!r} but this reader has "
                    f"{name}={mine[name]!r}; the split/order would differ, so resuming would repeat "
                    "or skip samples (elastic resume is not supported)"
                )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue, on the next iteration, exactly where `state` was taken."""
        self.check_state(state)
        self.epoch = state["epoch"]
        self._resume = (list(state["consumed"]), int(state["next_worker"]))
        self._consumed = sum(state["consumed"])

    # ---- iteration --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        num_workers, physical = (info.num_workers, info.id) if info else (1, 0)
        consumed, next_worker = self._resume or ([0] * num_workers, 0)
        self._resume = None
        if len(consumed) != num_workers:
            raise IncompatibleStateError(
                f"loader state was saved with {len(consumed)} reader process(es) per rank but this "
                f"iteration uses {num_workers}; each worker's stream would differ"
            )
        # rotating worker ids makes the DataLoader's round-robin restart at the saved next worker
        worker = (physical + next_worker) % num_workers
        self._consumed = consumed[worker] if info is None else 0
        for item in self._iter_worker(worker, num_workers, consumed[worker]):
            self._consumed += 1
            yield item

    def _iter_worker(self, worker: int, num_workers: int, skip: int) -> Iterator[dict[str, Any]]:
        order = unit_order(len(self.units), self.seed, self.epoch, self.shuffle)
        lo, hi = consumer_range(self.total_samples, self.rank, self.world_size, worker, num_workers)
        segments = segments_for(self.units, order, lo, hi)
        size = self.shuffle_buffer if self.shuffle else 1
        rng_seed = derive_seed("buffer", self.seed, self.epoch, self.rank, worker, num_workers)
        shuffler = PositionShuffler(hi - lo, size, rng_seed)
        shuffler.skip(skip)
        rows = self._read_positions(segments, shuffler.buffer)
        stream = self._stream(segments, shuffler.cursor)
        while True:
            for position in shuffler.fill():
                rows[position] = next(stream)
            taken = shuffler.take()
            if taken is None:
                return
            yield to_item(rows.pop(taken))

    def _read(self, segment: Segment) -> Iterator[dict[str, Any]]:
        """Records of a segment: a Parquet row group is read whole, a tar is streamed."""
        unit = self.units[segment.unit]
        tf = self.files[unit.file]
        fs, path = get_fs(tf.path, self.storage_options)
        with fs.open(path, "rb") as handle:
            if tf.format == "webdataset":
                yield from rows_from_tar(handle, segment.start, segment.stop)
                return
            table = pq.ParquetFile(handle).read_row_group(unit.row_group)
        yield from rows_from_table(table, segment.start, segment.stop)

    def _stream(self, segments: list[Segment], start: int) -> Iterator[dict[str, Any]]:
        """Rows of a consumer from position `start` on, one row group in memory at a time."""
        offset = 0
        for seg in segments:
            if offset + seg.num_rows > start:
                skip = max(start - offset, 0)
                yield from self._read(Segment(seg.unit, seg.start + skip, seg.stop))
            offset += seg.num_rows

    def _read_positions(self, segments: list[Segment], positions: list[int]) -> dict[int, dict[str, Any]]:
        """Rows at the given positions (a restored shuffle buffer), reading each row group once."""
        wanted, rows, offset = set(positions), {}, 0
        for seg in segments:
            hits = [p for p in range(offset, offset + seg.num_rows) if p in wanted]
            if hits:
                last = Segment(seg.unit, seg.start, seg.start + hits[-1] - offset + 1)  # stop after it
                records = list(self._read(last))
                rows.update({p: records[p - offset] for p in hits})
            offset += seg.num_rows
        return rows


class TokenLoader:
    """A DataLoader over a TokenDataset whose position (with any number of workers) can be saved.

    Batches are built inside each worker from its own stream (`collate_fn` as for DataLoader);
    every batch counts one step. Requires in_order=True, drop_last=False, persistent_workers=False
    (the defaults), which is what makes the position computable from the batch count.
    """

    def __init__(
        self,
        dataset: TokenDataset,
        batch_size: int,
        num_workers: int = 0,
        collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
        **dataloader_kwargs: Any,
    ):
        if batch_size < 1:
            raise ValueError(f"TokenLoader needs batch_size >= 1, got {batch_size}")
        for name, bad in (("drop_last", True), ("persistent_workers", True), ("in_order", False)):
            if dataloader_kwargs.get(name, not bad) == bad:
                raise ValueError(f"TokenLoader cannot track its position with {name}={bad}")
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.collate_fn, self.kwargs = collate_fn, dataloader_kwargs
        self._batches = 0
        self._resume_batches: int | None = None

    @property
    def _workers(self) -> int:
        return max(self.num_workers, 1)

    def _progress(self, batches: int) -> tuple[list[int], int]:
        ds = self.dataset
        sizes = consumer_sizes(ds.total_samples, ds.rank, ds.world_size, self._workers)
        return worker_progress(sizes, self.batch_size, batches)

    def __len__(self) -> int:
        sizes = consumer_sizes(self.dataset.total_samples, self.dataset.rank, self.dataset.world_size, self._workers)
        return sum(math.ceil(s / self.batch_size) for s in sizes)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.dataset.epoch:
            self._batches, self._resume_batches = 0, None
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        start = self._resume_batches or 0
        self._resume_batches, self._batches = None, start
        ds = copy.copy(self.dataset)
        ds._resume = self._progress(start)
        loader = DataLoader(
            ds, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=self.collate_fn, **self.kwargs
        )
        for batch in loader:
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        consumed, next_worker = self._progress(self._batches)
        return {
            **self.dataset._base_state(),
            "num_workers": self.num_workers,
            "consumed": consumed,
            "next_worker": next_worker,
            "batch_size": self.batch_size,
            "batches": self._batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.check_state(state)
        for name in ("num_workers", "batch_size"):
            if state.get(name) != getattr(self, name):
                raise IncompatibleStateError(
                    f"loader state was saved with {name}={state.get(name)!r} but this loader has "
                    f"{name}={getattr(self, name)!r}; batches would be cut differently"
                )
        self.dataset.epoch = state["epoch"]
        self._resume_batches = self._batches = int(state["batches"])
