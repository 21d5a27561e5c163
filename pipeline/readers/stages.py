"""One shard in, clips and dead letters out: the data plane's entry point for jobs.

    iter_shard(url, clips, storage_options, stats, limits=LimitSpec()) -> Iterator[Clip | DeadLetter]

Accounting rules (every sample is exactly one of ok / failed; `stats` is updated in place):
- a sample that yields at least one clip, or is merely too short for one, is ok;
- a sample with no video member, an unreadable video, a crashed decoder or a member over one
  of `limits` is failed, with one DeadLetter (stage, error_type) and `stats.failures[reason]`;
- a decode error after some clips were already yielded keeps the sample ok (those clips are
  real frames) and counts the note "decode_error_after_clips";
- a broken JSON sidecar keeps the clips with meta None and counts the note "bad_sidecar";
- a clip whose motion score is below `clips.min_motion` is dropped and counts the note
  "low_motion" (one per clip; a sample whose clips were all dropped is still ok, not too_short);
  a whole-video row is judged on its final chunk, which then carries `dropped="low_motion"`
  (its earlier chunks were already yielded);
- whole-video rows (`num_frames: all`) arrive as chunks; `stats.clips`/`frames` count a row at
  its final chunk; a row left without a final chunk (a decode error mid-row) is not a row;
- a shard of more than `limits.max_samples_per_shard` samples ends the shard: a
  DeadLetter(stage="shard", sample_key="") and `stats.shard_error` set, after the samples
  before it were processed;
- a damaged tar stream ends the shard. With `confirmed_damage=None` (a single pass: preview,
  eval) that is a DeadLetter(stage="shard", sample_key="") and `stats.shard_error` set, after
  the samples before the damage were processed. A job passes the damage signatures its
  earlier attempts met: damage seen for the first time raises `StreamDamaged` (transient: the
  stream may have been cut, not the file), damage at the same offset again is the input's own
  and ends the shard as above;
- a stream that ends before the size its listing reported raises `StreamEndedEarly`.
Every Clip and DeadLetter carries `source_member`, the member's name as the shard spells it;
its `sample_key` is `pipeline.records.safe_key` of the shard's key.
Infrastructure errors are raised, always as OSError (storage-client exceptions of other types,
such as botocore's connection errors, are wrapped in `ShardReadError(OSError)`): the caller
retries the shard. They are never turned into dead letters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Collection, Generator, Iterator
from typing import Any, BinaryIO, TypeVar

from pipeline.faults import StreamDamaged, StreamEndedEarly
from pipeline.readers.clips import DecodedClip, Grid, VideoDone, cut_clips
from pipeline.readers.decode import Media, VideoError
from pipeline.readers.isolation import DecodeWorker
from pipeline.readers.sources import ShardReadError, open_url
from pipeline.readers.tar_stream import CorruptShard, iter_samples, video_member
from pipeline.records import Clip, DeadLetter, Sample, ShardStats, clip_key, shard_id
from schemas.jobspec import ClipSpec, LimitSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

TEXT_SIDECARS = ("txt", "text", "caption", "cls")
MAX_MESSAGE = 1000  # characters of a dead letter's message (a decoder may echo hostile bytes)


class _InProcess:
    """Decoding in the calling process (isolate=False): for tests, benchmarks and debugging."""

    restarts = 0

    def cut_clips(self, key: str, data: Media, spec: ClipSpec, limits: LimitSpec | None = None,
                  grid: Grid | None = None) -> Iterator[DecodedClip | VideoDone]:
        return cut_clips(data, spec, limits, grid)


class CountingStream:
    """A read-only stream that knows how far it got, and refuses to end before `size` bytes."""

    def __init__(self, raw: BinaryIO, url: str, size: int | None):
        self.raw, self.url, self.size, self.offset = raw, url, size, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.offset += len(data)
        if not data and n != 0 and self.size is not None and self.offset < self.size:
            raise StreamEndedEarly(f"{self.url}: the stream ended at byte {self.offset} of the "
                                   f"{self.size} its listing reported", signature=f"EndedEarly@{self.offset}")
        return data


def listed_size(stream: Any, url: str) -> int | None:
    """The byte size the store reports for an open shard (None for compressed or unknown)."""
    if url.endswith(".gz"):
        return None  # the listing counts compressed bytes, the stream yields decompressed ones
    size = getattr(stream, "size", None)
    if isinstance(size, int):
        return size
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None


def iter_shard(url: str, clips: ClipSpec, storage_options: dict | None, stats: ShardStats, *,
               isolate: bool = True, limits: LimitSpec | None = None,
               grid: Grid | None = None, confirmed_damage: Collection[str] | None = None,
               shard: str | None = None) -> Iterator[Clip | DeadLetter]:
    """Stream one shard and yield its clips and dead letters in order (see the module doc).

    `grid`: the tokenizer's factors, needed by `num_frames: all` and `resolution: {short_side}`.
    `confirmed_damage`: see the module doc (None for a single pass). `shard` is the shard's id
    in clip keys (`InputShard.id`, what a job uses); without it, the id of the bare URL."""
    sid = shard or shard_id(url)
    limits = limits or LimitSpec()
    seen: set[str] = set()
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(_infrastructure_errors(url, open_url, url, storage_options))
        stream = CountingStream(raw, url, listed_size(raw, url))
        decoder = stack.enter_context(DecodeWorker(limits.decode_timeout_s)) if isolate else _InProcess()
        samples = iter_samples(stream, url, limits)  # type: ignore[arg-type]  # only read() is used
        stack.callback(samples.close)  # removes the spooled files of a shard left early
        while True:
            started = time.perf_counter()
            try:
                sample = _infrastructure_errors(url, next, samples, None)
            except (CorruptShard, EOFError, zlib.error) as exc:
                kind = exc.error_type if isinstance(exc, CorruptShard) else "CorruptShard"
                where = f"{kind}@{stream.offset}"
                if confirmed_damage is not None and where not in confirmed_damage:
                    raise StreamDamaged(f"{url}: {exc} (at byte {stream.offset}); reading it again",
                                        signature=where) from exc
                if confirmed_damage is not None:
                    exc = CorruptShard(kind, f"{exc} (at byte {stream.offset}, the same on a fresh read)")
                stats.shard_error = f"{kind}: {exc}"
                yield DeadLetter(url, "", "shard", kind, str(exc))
                return
            finally:
                _add_seconds(stats, "read", started)
            if sample is None:
                return
            if stats.samples_total >= limits.max_samples_per_shard:
                message = f"more than limits.max_samples_per_shard ({limits.max_samples_per_shard}) samples"
                stats.shard_error = f"TooManySamples: {message}"
                yield DeadLetter(url, "", "shard", "TooManySamples", message)
                return
            yield from _sample_clips(sample, sid, clips, stats, decoder, seen, limits, grid or Grid())


def _infrastructure_errors(url: str, func: Callable[..., T], *args: Any) -> T:
    """func(*args), with storage-client exceptions that are not OSErrors raised as OSErrors, so
    that every infrastructure failure reaches the caller as one retryable type."""
    try:
        return func(*args)
    except (OSError, CorruptShard, EOFError, zlib.error):
        raise  # StreamEndedEarly is an OSError: transient, the caller reads the shard again
    except Exception as exc:
        raise ShardReadError(f"reading {url}: {type(exc).__name__}: {exc}") from exc


def _add_seconds(stats: ShardStats, stage: str, started: float) -> None:
    # ShardStats.seconds is typed Counter[str] (int counts) but holds float seconds by design
    stats.seconds[stage] += time.perf_counter() - started  # type: ignore[assignment]


def _fail(sample: Sample, stats: ShardStats, stage: str, error_type: str, message: str) -> DeadLetter:
    letter = DeadLetter(sample.source_url, sample.key, stage, error_type, message[:MAX_MESSAGE],
                        sample.source_member(video_member(sample)))
    stats.samples_failed += 1
    stats.failures[letter.reason] += 1
    return letter


def _sample_clips(sample: Sample, sid: str, spec: ClipSpec, stats: ShardStats, decoder: Any,
                  seen: set[str], limits: LimitSpec, grid: Grid) -> Iterator[Clip | DeadLetter]:
    stats.samples_total += 1
    ext = video_member(sample)
    if sample.key in seen:
        yield _fail(sample, stats, "read", "DuplicateKey", "the key appears twice in this shard")
    elif sample.refusal is not None:
        yield _fail(sample, stats, "read", *sample.refusal)
    elif ext is None:
        members = ascii(", ".join(sorted(sample.members)) or "none")
        yield _fail(sample, stats, "read", "NoVideoMember", f"no video member (members: {members})")
    else:
        meta, bad_sidecar = _meta(sample)
        produced = yield from _decoded_clips(sample, ext, sid, spec, stats, decoder, meta, limits, grid)
        if produced is not None:  # the sample is ok: count its notes
            stats.samples_ok += 1
            if bad_sidecar:
                stats.notes["bad_sidecar"] += 1
            if produced == 0:
                stats.notes["too_short"] += 1
    seen.add(sample.key)


def _decoded_clips(sample: Sample, ext: str, sid: str, spec: ClipSpec, stats: ShardStats, decoder: Any,
                   meta: str | None, limits: LimitSpec, grid: Grid) -> Generator[Clip | DeadLetter, None, int | None]:
    """Yield the sample's clips (or its one dead letter); return the clips cut, None if failed."""
    produced = 0
    data = sample.members[ext] if ext in sample.members else sample.files[ext]
    items = iter(decoder.cut_clips(sample.key, data, spec, limits, grid))
    row_frames = 0
    while True:
        started = time.perf_counter()
        try:
            item = next(items, None)
        except VideoError as exc:
            if produced == 0:
                yield _fail(sample, stats, exc.stage, exc.error_type, str(exc))
                return None
            log.warning("%s %s: decode error after %d clips, keeping them: %s",
                        sample.source_url, sample.key, produced, exc)
            stats.notes["decode_error_after_clips"] += 1
            return produced
        finally:
            _add_seconds(stats, "decode", started)
        if item is None:
            return produced
        if isinstance(item, VideoDone):
            stats.video_seconds += item.duration
            stats.scene_cuts += item.cuts
            continue
        row_frames += item.frames.shape[0]
        if not item.final:
            yield _clip(item, sid, sample, ext, meta)
            continue
        produced += 1
        dropped = "low_motion" if spec.min_motion is not None and (item.motion or 0.0) < spec.min_motion else None
        if dropped:
            stats.notes[dropped] += 1
        else:
            stats.clips += 1
            stats.frames += row_frames
        row_frames = 0
        if item.part is not None or not dropped:  # a row's final chunk closes its stream even when dropped
            yield _clip(item, sid, sample, ext, meta, dropped)


def _clip(item: DecodedClip, sid: str, sample: Sample, ext: str, meta: str | None,
          dropped: str | None = None) -> Clip:
    return Clip(clip_key(sid, sample.key, item.index), sample.source_url, sample.key, item.index,
                item.start_frame, item.fps, item.frames, meta, sample.source_member(ext), scene=item.scene,
                scene_start=item.scene_start, motion=item.motion, part=item.part, final=item.final,
                dropped=dropped)


def _meta(sample: Sample) -> tuple[str | None, bool]:
    """(meta, sidecar_was_broken). Meta is the `.json` member verbatim if it parses, else text
    sidecars wrapped as {"txt": ...}; None when there are none or the JSON is broken."""
    if "json" in sample.members:
        try:
            text = sample.members["json"].decode("utf-8")
            json.loads(text)
            return text, False
        except (UnicodeDecodeError, ValueError):
            return None, True
    texts, broken = {}, False
    for ext in TEXT_SIDECARS:
        if ext in sample.members:
            try:
                texts[ext] = sample.members[ext].decode("utf-8")
            except UnicodeDecodeError:
                broken = True
    return (json.dumps(texts) if texts else None), broken
