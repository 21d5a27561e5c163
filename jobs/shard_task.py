"""One input shard's whole life, run as a Ray task on a CPU worker.

stream the shard (pipeline.readers.stages.iter_shard) -> group clips into batches by shape -> send each
batch to a tokenizer actor, keeping at most `max_batches_in_flight` outstanding (backpressure:
decoded frames never pile up in the object store) -> write rows in clip order through
ShardWriter -> commit (publish the files, then the manifest record).

A batch whose actor dies is sent again to another actor (actors are stateless); anything else
that goes wrong aborts the writer and raises, and the driver retries the whole shard into fresh
temporaries. Bad samples never raise: they arrive as DeadLetters and become error rows.
Whole-video rows (`clips.num_frames: all`) arrive as chunks and go through jobs/rows.py.
`quality.sample_rate` picks clips by a hash of their key (`quality_sampled`); their batch goes
to the actor's `encode_scored`, which also decodes them back and scores PSNR/SSIM.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.readers.sources import InputShard
from pipeline.records import Clip, DeadLetter, ShardStats
from schemas.jobspec import ClipSpec, LimitSpec

log = logging.getLogger(__name__)

# how long a batch may take before its actor is treated as lost (a hung GPU, an actor that can
# never be placed again); generous because a CPU-only tokenizer is slow
BATCH_TIMEOUT_S = 900.0
# an actor that failed a call is skipped for this long (it is restarting elsewhere), doubling
# with each further failure: an actor that cannot be placed again is soon left alone
SUSPECT_S = 5.0
SUSPECT_MAX_S = 300.0
MAX_RESENDS = 8


@dataclass(frozen=True)
class ShardJob:
    """Everything a shard task needs, as plain picklable data (built once by the driver)."""

    output_uri: str
    fmt: str
    output_storage_options: dict[str, Any]
    input_storage_options: dict[str, Any]
    clips: ClipSpec
    tokenizer_name: str
    batch_size: int
    max_batches_in_flight: int
    file_metadata: dict[str, str] = field(default_factory=dict)
    isolate_decoder: bool = True
    limits: LimitSpec = field(default_factory=LimitSpec)
    grid: Any = None  # pipeline.readers.clips.Grid of the tokenizer; None = (1, 1)
    optional_columns: tuple[str, ...] = ()  # schemas.tokens.OPTIONAL_COLUMNS the files carry
    sample_rate: float = 0.0  # quality.sample_rate


def quality_sampled(key: str, rate: float) -> bool:
    """Whether clip `key` is among the `rate` fraction scored for quality: by a hash, so reruns agree."""
    if rate <= 0:
        return False
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) < rate * 0x1_0000_0000


class TokenizerUnavailable(RuntimeError):
    """No tokenizer actor answered a batch after several resends (infrastructure failure)."""


@dataclass
class _Batch:
    clips: list[Any]  # ClipInfo: row fields only; the frames live in the object store alone
    frames_ref: Any  # ObjectRef of uint8 [B, T, H, W, 3], put once so resends do not copy again
    nbytes: int  # of the frames, counted again for each send to another node
    actor: str  # name in the roster
    result_ref: Any
    sends: int = 1
    scored: list[bool] | None = None  # clips whose quality the actor measures (encode_scored)


class ActorRouter:
    """Picks tokenizer actors for batches: same-node actors first, round robin, skipping suspects.

    Starts from the roster the shard was handed (jobs.pool.Roster) and asks the job's roster
    registry for a newer one every `roster.refresh_s` without waiting for the answer, so actors
    that start mid-shard take batches and actors that left are no longer picked. Actors are
    named by their roster name (`actors[name]` is the handle). Counts the bytes of frames sent
    in batches to actors on this node and on other nodes (`frame_bytes`).
    """

    def __init__(self, roster: Any, registry: Any = None):
        import ray

        if not roster.members:
            raise ValueError("no tokenizer actors to send batches to")
        self.node = ray.get_runtime_context().get_node_id()
        self.registry = registry
        self.actors: dict[str, Any] = {}  # every actor this shard has seen (sent work keeps its own)
        self.made_by: dict[str, tuple[str, str]] = {}  # name -> (device, dtype)
        self.nodes: dict[str, str] = {}
        self.suspect_until: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.frame_bytes: Counter[str] = Counter()
        self.next = 0
        self.used: set[str] = set()  # actors that answered a batch
        self._asked, self._answer = time.monotonic(), None
        self._adopt(roster)

    def _adopt(self, roster: Any) -> None:
        self.version, self.refresh_s = roster.version, roster.refresh_s
        for name, handle, node in roster.members:
            self.actors[name], self.nodes[name] = handle, node
        self.made_by.update({name: (device, dtype) for name, device, dtype in roster.made_by})
        names = [name for name, _, _ in roster.members]
        local = [n for n in names if self.nodes[n] == self.node]
        self.order = local + [n for n in names if n not in local]
        self.local = set(local)

    def _refresh(self) -> None:
        import ray

        if self.registry is None:
            return
        if self._answer is not None:
            if ray.wait([self._answer], timeout=0)[0]:
                try:
                    newer = ray.get(self._answer)
                except Exception:  # noqa: BLE001 - registry gone (job ending): keep the roster
                    newer, self.registry = None, None
                self._answer = None
                if newer is not None and newer.members:
                    self._adopt(newer)
        elif time.monotonic() - self._asked >= self.refresh_s:
            self._asked, self._answer = time.monotonic(), self.registry.newer.remote(self.version)

    def pick(self) -> str:
        self._refresh()
        now = time.monotonic()
        healthy = [n for n in self.order if self.suspect_until.get(n, 0.0) <= now] or self.order
        preferred = [n for n in healthy if n in self.local] or healthy
        choice = preferred[self.next % len(preferred)]
        self.next += 1
        return choice

    def send(self, clips: list[Clip], scored: list[bool] | None = None) -> _Batch:
        import ray

        from pipeline.writers.commit import ClipInfo

        frames = np.stack([c.frames for c in clips])  # [B, T, H, W, 3] uint8
        infos = [ClipInfo.from_clip(c) for c in clips]  # the caller drops the decoded frames now
        batch = _Batch(infos, ray.put(frames), int(frames.nbytes), self.pick(), None,
                       scored=scored if scored and any(scored) else None)
        batch.result_ref = self._call(batch)
        return batch

    def _call(self, batch: _Batch) -> Any:
        self.frame_bytes["same_node" if self.nodes[batch.actor] == self.node else "other_node"] += batch.nbytes
        actor = self.actors[batch.actor]
        if batch.scored is None:
            return actor.encode.remote(batch.frames_ref)
        return actor.encode_scored.remote(batch.frames_ref, batch.scored)

    def pick_after_loss(self) -> str:
        """An actor for a resend; when every actor is suspect (a lone actor restarting), wait out the
        picked one's window first, rather than spend the resends on an actor that is still coming back."""
        actor = self.pick()
        delay = self.suspect_until.get(actor, 0.0) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return actor

    def get(self, ref: Any, actor: str) -> Any:
        """ray.get of a call to `actor`, bounded by BATCH_TIMEOUT_S (past it: TokenizerUnavailable)."""
        import ray
        from ray.exceptions import GetTimeoutError

        try:
            answer = ray.get(ref, timeout=BATCH_TIMEOUT_S)
        except GetTimeoutError as exc:
            raise TokenizerUnavailable(f"tokenizer actor {actor} gave no answer in {BATCH_TIMEOUT_S:.0f} s") from exc
        self.used.add(actor)
        return answer

    def lost(self, actor: str, sends: int, what: str, exc: BaseException) -> None:
        """`actor` failed a call carrying `what`, sent `sends` times: skip the actor for a while (longer
        with each further failure); TokenizerUnavailable once `what` was sent too often."""
        self.failures[actor] = self.failures.get(actor, 0) + 1
        backoff = min(SUSPECT_MAX_S, SUSPECT_S * 2 ** (self.failures[actor] - 1))
        self.suspect_until[actor] = time.monotonic() + backoff
        if sends > MAX_RESENDS:
            raise TokenizerUnavailable(f"{what} lost {sends} times: {exc}") from exc

    def result(self, batch: _Batch) -> np.ndarray:
        """The batch's encoded array; resends to another actor when its actor died."""
        from ray.exceptions import RayActorError

        while True:
            try:
                return self.get(batch.result_ref, batch.actor)
            except RayActorError as exc:
                self.lost(batch.actor, batch.sends, "batch", exc)
                log.warning("tokenizer actor %s failed (%s); resending batch", batch.actor, type(exc).__name__)
                batch.actor = self.pick_after_loss()
                batch.sends += 1
                batch.result_ref = self._call(batch)


def tokens_per_clip(encoded: np.ndarray, discrete: bool) -> int:
    # discrete: one id per latent position [t, h, w]; continuous [c, t, h, w]: positions t*h*w
    return int(encoded.size if discrete else encoded[0].size)


def _finish(batch: _Batch, router: ActorRouter, writer: Any, job: ShardJob, stats: ShardStats) -> None:
    start = time.monotonic()
    encoded = router.result(batch)
    seconds: Any = stats.seconds  # Counter typed for ints; stage times are float seconds
    seconds["tokenize_wait"] += time.monotonic() - start
    clips = batch.clips
    if batch.scored is not None:
        encoded, scores = encoded
        clips = [with_quality(c, q, stats) for c, q in zip(clips, scores, strict=True)]
    discrete = encoded.dtype.kind in "iu"
    for clip, item in zip(clips, encoded, strict=True):
        writer.add(clip, item, job.tokenizer_name)
        stats.tokens += tokens_per_clip(item, discrete)


def with_quality(clip: Any, scores: dict[str, float] | None, stats: ShardStats) -> Any:
    if scores is None:
        return clip
    stats.add_quality(scores["psnr"], scores["ssim"])
    return replace(clip, psnr=scores["psnr"], ssim=scores["ssim"])


def stream_shard(job: ShardJob, shard: InputShard, stats: ShardStats, writer: Any, router: ActorRouter,
                 known_faults: frozenset[str] = frozenset()) -> None:
    """Feed one shard's clips through the actors into `writer`, in clip order. Damage to the
    shard's stream raises (transient) unless an earlier attempt met it at the same place."""
    from jobs.rows import RowStreamer
    from pipeline.readers.stages import iter_shard

    groups: dict[tuple[int, ...], list[Clip]] = {}
    pending: deque[_Batch] = deque()
    rows = RowStreamer(router, writer, job, stats, lambda key: quality_sampled(key, job.sample_rate))

    def send(clips: list[Clip]) -> None:
        pending.append(router.send(clips, [quality_sampled(c.key, job.sample_rate) for c in clips]))
        # backpressure: at most max_batches_in_flight outstanding while the next batch decodes
        while len(pending) > job.max_batches_in_flight:
            _finish(pending.popleft(), router, writer, job, stats)

    for item in iter_shard(shard.url, job.clips, job.input_storage_options, stats, isolate=job.isolate_decoder,
                           limits=job.limits, grid=job.grid, confirmed_damage=known_faults, shard=shard.id):
        if isinstance(item, DeadLetter):
            writer.add_error(item)
            continue
        if item.part is not None:
            rows.push(item)
            continue
        group = groups.setdefault(tuple(item.frames.shape), [])
        group.append(item)
        if len(group) >= job.batch_size:
            send(groups.pop(tuple(item.frames.shape)))
        elif sum(len(g) for g in groups.values()) > 2 * job.batch_size:
            send(groups.pop(next(iter(groups))))  # many clip shapes (native aspect ratios): bound what waits
    for shape in list(groups):
        send(groups.pop(shape))
    rows.close()
    while pending:
        _finish(pending.popleft(), router, writer, job, stats)


def _made_by(router: ActorRouter) -> dict[str, str]:
    """{"device", "dtype"} of the actors that encoded the shard's batches, for its record (from
    the rosters: no call to the actors, which may be busy or restarting)."""
    made = [router.made_by.get(name, ("unknown", "unknown")) for name in router.used]
    return {key: ",".join(sorted({m[i] for m in made})) or "none" for i, key in enumerate(("device", "dtype"))}


def run_shard(job: ShardJob, shard: InputShard, attempt: int, roster: Any, registry: Any = None,
              known_faults: frozenset[str] = frozenset()) -> Any:
    """Process one shard from scratch and commit it; returns the manifest record.

    `roster` (jobs.pool.Roster) holds the actors to use; `registry` hands out newer rosters."""
    from pipeline.writers.commit import ShardWriter

    stats = ShardStats()
    writer = ShardWriter(
        job.output_uri,
        shard.id,
        shard.url,
        fmt=job.fmt,
        file_metadata=job.file_metadata,
        storage_options=job.output_storage_options,
        attempt=attempt,
        optional_columns=job.optional_columns,
    )
    try:
        router = ActorRouter(roster, registry)
        stream_shard(job, shard, stats, writer, router, known_faults)
        stats.frame_bytes.update(router.frame_bytes)
        writer.extra.update(_made_by(router))
        return writer.commit(stats)
    except BaseException:
        writer.abort()
        raise
