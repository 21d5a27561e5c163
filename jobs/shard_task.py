"""One input shard's whole life, run as a Ray task on a CPU worker.

stream the shard (pipeline.readers.stages.iter_shard) -> group clips into batches by shape -> send each
batch to a tokenizer actor, keeping at most `max_batches_in_flight` outstanding (backpressure:
decoded frames never pile up in the object store) -> write rows in clip order through
ShardWriter -> commit (publish the files, then the manifest record).

A batch whose actor dies is sent again to another actor (actors are stateless); anything else
that goes wrong aborts the writer and raises, and the driver retries the whole shard into fresh
temporaries. Bad samples never raise: they arrive as DeadLetters and become error rows.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.records import Clip, DeadLetter, ShardStats, shard_id
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


class TokenizerUnavailable(RuntimeError):
    """No tokenizer actor answered a batch after several resends (infrastructure failure)."""


@dataclass
class _Batch:
    clips: list[Any]  # ClipInfo: row fields only; the frames live in the object store alone
    frames_ref: Any  # ObjectRef of uint8 [B, T, H, W, 3], put once so resends do not copy again
    actor: int
    result_ref: Any
    sends: int = 1


class ActorRouter:
    """Picks tokenizer actors for batches: same-node actors first, round robin, skipping suspects."""

    def __init__(self, actors: list[Any], actor_nodes: list[str | None]):
        import ray

        if not actors:
            raise ValueError("no tokenizer actors to send batches to")
        self.actors = actors
        node = ray.get_runtime_context().get_node_id()
        local = [i for i, n in enumerate(actor_nodes) if n == node]
        others = [i for i in range(len(actors)) if i not in local]
        self.order = local + others
        self.local = set(local)
        self.suspect_until = [0.0] * len(actors)
        self.failures = [0] * len(actors)
        self.next = 0

    def pick(self) -> int:
        now = time.monotonic()
        healthy = [i for i in self.order if self.suspect_until[i] <= now] or self.order
        preferred = [i for i in healthy if i in self.local] or healthy
        choice = preferred[self.next % len(preferred)]
        self.next += 1
        return choice

    def send(self, clips: list[Clip]) -> _Batch:
        import ray

        from pipeline.writers.commit import ClipInfo

        frames_ref = ray.put(np.stack([c.frames for c in clips]))  # [B, T, H, W, 3] uint8
        infos = [ClipInfo.from_clip(c) for c in clips]  # the caller drops the decoded frames now
        actor = self.pick()
        return _Batch(infos, frames_ref, actor, self.actors[actor].encode.remote(frames_ref))

    def result(self, batch: _Batch) -> np.ndarray:
        """The batch's encoded array; resends to another actor when its actor died."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        while True:
            try:
                return ray.get(batch.result_ref, timeout=BATCH_TIMEOUT_S)
            except GetTimeoutError as exc:
                raise TokenizerUnavailable(f"tokenizer actor {batch.actor} gave no answer in {BATCH_TIMEOUT_S:.0f} s") from exc
            except RayActorError as exc:
                self.failures[batch.actor] += 1
                backoff = min(SUSPECT_MAX_S, SUSPECT_S * 2 ** (self.failures[batch.actor] - 1))
                self.suspect_until[batch.actor] = time.monotonic() + backoff
                if batch.sends > MAX_RESENDS:
                    raise TokenizerUnavailable(f"batch lost {batch.sends} times: {exc}") from exc
                log.warning("tokenizer actor %d failed (%s); resending batch", batch.actor, type(exc).__name__)
                batch.actor = self.pick()
                batch.sends += 1
                batch.result_ref = self.actors[batch.actor].encode.remote(batch.frames_ref)


def _tokens_per_clip(encoded: np.ndarray, discrete: bool) -> int:
    # discrete: one id per latent position [t, h, w]; continuous [c, t, h, w]: positions t*h*w
    return int(encoded.size if discrete else encoded[0].size)


def _finish(batch: _Batch, router: ActorRouter, writer: Any, job: ShardJob, stats: ShardStats) -> None:
    start = time.monotonic()
    encoded = router.result(batch)
    seconds: Any = stats.seconds  # Counter typed for ints; stage times are float seconds
    seconds["tokenize_wait"] += time.monotonic() - start
    discrete = encoded.dtype.kind in "iu"
    for clip, item in zip(batch.clips, encoded, strict=True):
        writer.add(clip, item, job.tokenizer_name)
        stats.tokens += _tokens_per_clip(item, discrete)


def stream_shard(job: ShardJob, url: str, stats: ShardStats, writer: Any, router: ActorRouter) -> None:
    """Feed one shard's clips through the actors into `writer`, in clip order."""
    from pipeline.readers.stages import iter_shard

    groups: dict[tuple[int, ...], list[Clip]] = {}
    pending: deque[_Batch] = deque()

    def send(clips: list[Clip]) -> None:
        pending.append(router.send(clips))
        # backpressure: at most max_batches_in_flight outstanding while the next batch decodes
        while len(pending) > job.max_batches_in_flight:
            _finish(pending.popleft(), router, writer, job, stats)

    for item in iter_shard(url, job.clips, job.input_storage_options, stats, isolate=job.isolate_decoder,
                           limits=job.limits):
        if isinstance(item, DeadLetter):
            writer.add_error(item)
            continue
        group = groups.setdefault(tuple(item.frames.shape), [])
        group.append(item)
        if len(group) >= job.batch_size:
            send(groups.pop(tuple(item.frames.shape)))
    for shape in list(groups):
        send(groups.pop(shape))
    while pending:
        _finish(pending.popleft(), router, writer, job, stats)


def run_shard(job: ShardJob, url: str, attempt: int, actors: list[Any], actor_nodes: list[str | None]) -> Any:
    """Process one shard from scratch and commit it; returns the manifest record."""
    from pipeline.writers.commit import ShardWriter

    stats = ShardStats()
    writer = ShardWriter(
        job.output_uri,
        shard_id(url),
        url,
        fmt=job.fmt,
        file_metadata=job.file_metadata,
        storage_options=job.output_storage_options,
        attempt=attempt,
    )
    try:
        stream_shard(job, url, stats, writer, ActorRouter(actors, actor_nodes))
        return writer.commit(stats)
    except BaseException:
        writer.abort()
        raise
