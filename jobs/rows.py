"""Whole-video rows (`clips.num_frames: all`): one exact causal stream per row, chunk by chunk.

    shard task                                   tokenizer actor
    RowStreamer.push(chunk record) ──────────►   TokenizerWorker.stream_encode(session, part, frames, ...)
      keeps every chunk's ObjectRef                StreamTable: session -> encoder (and decoder) state
      collects the chunk outputs in order          returns the chunk's ids / latents (+ quality at the end)
      writes the row when its final chunk is in

All chunks of a row go to one actor (the stream's causal state lives there). Chunks are sent
without waiting; on the actor they run in their own concurrency group of one thread, so in
submission order, beside the batch calls, and compute under the model's compute lock (a chunk
that still finds its predecessor missing waits TURN_TIMEOUT_S, then counts as lost). Actor
memory is bounded by the chunk (plus temporal attention's cache of past frames, which grows with the
row: see docs/tokenizer.md). The shard task keeps the row's chunks in the object store until the
row is written (Ray spills them to disk when large; `clips.max_frames` bounds a row): if the
actor dies, or no longer holds the session, the row restarts on another actor from its first
chunk, with nothing decoded again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_STREAMS = 64  # sessions an actor keeps; the least recently used beyond are dropped (restarted)
TURN_TIMEOUT_S = 120.0  # a chunk waits this long for its predecessor before its stream counts as lost


class StreamLost(RuntimeError):
    """The actor holds no state for this stream (it restarted, dropped it, or a chunk is out of order)."""


# ---- actor side -----------------------------------------------------------------------------
@dataclass
class _Stream:
    encoder: Any  # tokenizer_core.streaming.StreamSession
    decoder: Any | None  # set when the row's quality is sampled
    quality: Any | None  # tokenizer_core.metrics.RunningQuality
    parts: int = 0


class StreamTable:
    """The streams one actor serves, by session id (LRU-bounded); safe for concurrent calls."""

    def __init__(self, tok: Any, compute_lock: Any, refine_steps: int = 0):
        self.tok, self.compute_lock, self.refine_steps = tok, compute_lock, refine_steps
        self.streams: OrderedDict[str, _Stream] = OrderedDict()
        self.turn = threading.Condition()  # guards `streams` and each stream's `parts`

    def _due(self, session: str, part: int) -> bool:
        stream = self.streams.get(session)
        return part == 0 or (stream is not None and stream.parts == part)

    def _stream(self, session: str, part: int, score: bool) -> _Stream:
        """The session's stream once chunk `part` is due (called holding `turn`)."""
        from tokenizer_core.metrics import RunningQuality

        self.turn.wait_for(lambda: self._due(session, part), timeout=TURN_TIMEOUT_S)
        if part == 0:
            self.streams.pop(session, None)
            decoder = self.tok.stream_session("decode") if score else None
            self.streams[session] = _Stream(self.tok.stream_session("encode"), decoder,
                                            RunningQuality() if score else None)
            while len(self.streams) > MAX_STREAMS:
                self.streams.popitem(last=False)
        stream = self.streams.get(session)
        if stream is None or stream.parts != part:
            have = "none" if stream is None else f"part {stream.parts} next"
            raise StreamLost(f"stream {session}: got part {part}, actor holds {have}")
        self.streams.move_to_end(session)
        return stream

    def encode(self, session: str, part: int, video: Any, frames: np.ndarray, final: bool,
               score: bool) -> tuple[np.ndarray, dict[str, float] | None]:
        """video: float [1, 3, T, H, W] on the device; frames: the same chunk as uint8 [1, T, H, W, 3]."""
        import torch

        from tokenizer_core import metrics

        with self.turn:
            stream = self._stream(session, part, score)
        try:
            with self.compute_lock:
                out = self.tok.encode_chunk(stream.encoder, video, self.refine_steps)
                if stream.quality is not None:
                    recon = self.tok.decode_chunk(stream.decoder, out)  # [1, 3, T, H, W]
                    stream.quality.add(metrics.from_uint8_frames(torch.as_tensor(frames[0])),
                                       metrics.to_pixels(recon[0].cpu()))
        except BaseException:
            with self.turn:
                self.streams.pop(session, None)  # half-updated state must not be continued
                self.turn.notify_all()
            raise
        result = out.cpu().numpy() if out.dtype == torch.int64 else out.float().cpu().numpy()
        scores = None
        with self.turn:
            stream.parts += 1
            if final:
                self.streams.pop(session, None)
                if stream.quality is not None:
                    scores = {"psnr": stream.quality.psnr, "ssim": stream.quality.ssim}
            self.turn.notify_all()
        return result, scores

    def close(self, session: str) -> None:
        with self.turn:
            self.streams.pop(session, None)
            self.turn.notify_all()


# ---- shard-task side ------------------------------------------------------------------------
@dataclass
class _Row:
    first: Any  # the Clip record of part 0 (row fields)
    session: str
    actor: str  # name of the actor in the router's roster
    score: bool
    refs: list[Any] = field(default_factory=list)  # ObjectRef per chunk: uint8 [1, T, H, W, 3]
    finals: list[bool] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)  # ObjectRef per chunk, None once resolved
    arrays: list[Any] = field(default_factory=list)  # resolved (encoded, scores) per chunk
    frames: int = 0
    last: Any = None  # the final chunk's record once it arrived
    sends: int = 1


class RowStreamer:
    """Streams whole-video rows through the actors and writes each when complete (module doc)."""

    def __init__(self, router: Any, writer: Any, job: Any, stats: Any, sampled: Any):
        self.router, self.writer, self.job, self.stats = router, writer, job, stats
        self.sampled = sampled  # key -> bool: is this row's quality measured
        self.open: _Row | None = None
        self.queue: deque[_Row] = deque()  # rows with all chunks sent, oldest first

    def push(self, chunk: Any) -> None:
        """One chunk record (pipeline.records.Clip with `part` set), in order."""
        if self.open is not None and (chunk.part == 0 or chunk.key != self.open.first.key):
            self._abandon(self.open)  # its video ended without a final chunk (a decode error)
        if chunk.part == 0:
            self.open = _Row(chunk, uuid.uuid4().hex, self.router.pick(), self.sampled(chunk.key))
        row = self.open
        if row is None or chunk.part != len(row.refs):
            raise RuntimeError(f"row {chunk.key}: chunk {chunk.part} arrived out of order")
        if chunk.final and chunk.dropped:
            self._abandon(row)
            return
        import ray

        row.refs.append(ray.put(np.ascontiguousarray(chunk.frames)[None]))
        row.finals.append(chunk.final)
        row.results.append(self._call(row, chunk.part))
        row.frames += chunk.frames.shape[0]
        if chunk.final:
            row.last, self.open = chunk, None
            self.queue.append(row)
        self._drain(self.job.max_batches_in_flight * 2)

    def close(self) -> None:
        """At the shard's end: drop an unfinished row, wait for and write every finished one."""
        if self.open is not None:
            self._abandon(self.open)
        self._drain(0)

    def _call(self, row: _Row, part: int) -> Any:
        """Send chunk `part`. While its predecessor is still outstanding, that one's result goes
        along as an argument: Ray then starts this call only once the predecessor has finished, so
        chunks run in order however the actor dequeues them. (Without it, the chunks a restart
        sends all at once can run out of order, and a chunk waiting for its turn in the streams'
        single thread blocks the very chunk it waits for.)"""
        actor = self.router.actors[row.actor]
        before = row.results[part - 1] if part > 0 else None
        return actor.stream_encode.remote(row.session, part, row.refs[part], row.finals[part], row.score, before)

    def _abandon(self, row: _Row) -> None:
        self.router.actors[row.actor].stream_close.remote(row.session)
        if row is self.open:
            self.open = None

    def _drain(self, limit: int) -> None:
        """Resolve the oldest outstanding chunks until at most `limit` remain; write finished rows.
        A row's chunks resolve in order, so `len(row.arrays)` of them are done and the next is
        the oldest outstanding one (counting, not scanning: a whole video may be thousands of chunks)."""
        while True:
            while self.queue and len(self.queue[0].arrays) == len(self.queue[0].results):
                self._write(self.queue.popleft())
            rows = [*self.queue, *([self.open] if self.open is not None else [])]
            if sum(len(r.results) - len(r.arrays) for r in rows) <= limit:
                return
            oldest = next(r for r in rows if len(r.results) > len(r.arrays))
            self._resolve(oldest, len(oldest.arrays))

    def _resolve(self, row: _Row, part: int) -> None:
        from ray.exceptions import RayActorError

        started = time.monotonic()
        try:
            value = self.router.get(row.results[part], row.actor)
        except (RayActorError, StreamLost) as exc:
            self.router.lost(row.actor, row.sends, f"row {row.first.key}", exc)
            self._restart(row, exc)
            return
        finally:
            seconds: Any = self.stats.seconds
            seconds["tokenize_wait"] += time.monotonic() - started
        row.arrays.append(value)
        row.results[part] = None

    def _restart(self, row: _Row, exc: BaseException) -> None:
        """Send the row again from its first chunk, to another actor where one is healthy."""
        log.warning("row %s: tokenizer stream lost (%s); restarting it", row.first.key, type(exc).__name__)
        row.actor, row.session, row.sends = self.router.pick_after_loss(), uuid.uuid4().hex, row.sends + 1
        row.arrays, row.results = [], []
        for part in range(len(row.refs)):
            row.results.append(self._call(row, part))  # each waits on the one before (see _call)

    def _write(self, row: _Row) -> None:
        from jobs.shard_task import tokens_per_clip, with_quality
        from pipeline.writers.commit import ClipInfo

        parts = [encoded for encoded, _ in row.arrays]  # each [1, t', h, w] ids or [1, c, t', h, w]
        encoded = np.concatenate(parts, axis=1 if parts[0].dtype.kind in "iu" else 2)[0]
        scores = row.arrays[-1][1]
        info = replace(ClipInfo.from_clip(row.first), num_frames=row.frames, motion=row.last.motion)
        info = with_quality(info, scores, self.stats)
        self.writer.add(info, encoded, self.job.tokenizer_name)
        self.stats.tokens += tokens_per_clip(encoded, encoded.dtype.kind in "iu")
