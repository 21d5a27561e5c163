"""Transient vs permanent: the classification, and real stream faults met by iter_shard."""

from __future__ import annotations

import pickle
import shutil

import pytest

from pipeline import faults
from pipeline.readers.stages import iter_shard
from pipeline.records import Clip, DeadLetter, ShardStats
from schemas.jobspec import ClipSpec
from tests.fixtures.faulty_http import FaultyServer

SPEC = ClipSpec(num_frames=9, resolution=(32, 32))


def _read(url: str, **kwargs) -> tuple[list, ShardStats]:
    stats = ShardStats()
    return list(iter_shard(url, SPEC, None, stats, isolate=False, **kwargs)), stats


def _clips(items: list) -> list[tuple[str, int, bytes]]:
    return [(c.sample_key, c.clip_index, c.frames.tobytes()) for c in items if isinstance(c, Clip)]


@pytest.fixture
def served(tmp_path, sample_shards):
    shutil.copy(sample_shards[0], tmp_path / "shard.tar")
    server = FaultyServer(root=tmp_path)
    yield server, f"{server.url}/shard.tar", tmp_path / "shard.tar"
    server.close()


def test_classification_of_the_faults_a_week_long_job_meets():
    class RayTaskError_OSError(OSError):  # what Ray's as_instanceof_cause builds: cause class in the MRO
        pass

    transient = [OSError("reset"), ConnectionResetError(), TimeoutError(), MemoryError(),
                 faults.StreamEndedEarly("short", "EndedEarly@10"), RayTaskError_OSError("wrapped"),
                 RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                 Exception("An error occurred (SlowDown) when calling the GetObject operation")]
    for exc in transient:
        assert faults.classify(exc) == faults.TRANSIENT, exc
    for exc in (ValueError("bad config"), KeyError("x"), TypeError("bug")):
        assert faults.classify(exc) == faults.PERMANENT, exc
    chained = ValueError("while reading")
    chained.__cause__ = ConnectionError("peer closed")
    assert faults.classify(chained) == faults.TRANSIENT
    assert faults.is_cuda_oom(RuntimeError("CUDA out of memory.")) and not faults.is_cuda_oom(MemoryError())
    slow = OSError("An error occurred (SlowDown): Please reduce your request rate.")
    assert faults.retry_delay(slow, 1, 1.0, 30.0) == 4.0 * faults.retry_delay(OSError("x"), 1, 1.0, 30.0)
    assert faults.retry_delay(OSError("x"), 10, 1.0, 30.0) == 30.0
    assert {faults.sample_error_is_transient(t) for t in ("DecoderCrashed", "DecoderTimeout", "DecoderOutOfMemory")} == {True}
    assert not faults.sample_error_is_transient("DecodeError")


def test_a_transient_fault_keeps_its_signature_through_pickling():
    """Ray pickles a task's exception to the driver: the signature must survive."""
    exc = pickle.loads(pickle.dumps(faults.StreamDamaged("cut", signature="TruncatedShard@1024")))
    assert isinstance(exc, faults.StreamDamaged) and exc.signature == "TruncatedShard@1024"
    assert faults.signature(exc) == "TruncatedShard@1024" and faults.signature(ValueError()) == ""


def test_a_socket_closed_mid_stream_is_transient_and_a_fresh_read_is_whole(served):
    """The server promises the whole shard and closes the socket after 70 kB: the read fails
    with a transient error (never a dead letter), and reading again yields every clip."""
    server, url, local = served
    reference = _clips(_read(str(local))[0])
    server.add_fault("shard.tar", "cut:70000")
    with pytest.raises(OSError) as err:
        _read(url, confirmed_damage=frozenset())
    assert faults.classify(err.value) == faults.TRANSIENT and server.injected["cut"] == 1
    items, stats = _read(url, confirmed_damage=frozenset())
    assert _clips(items) == reference and stats.shard_error is None
    assert not [x for x in items if isinstance(x, DeadLetter)]


def test_throttling_is_transient(served):
    server, url, _ = served
    server.add_fault("shard.tar", "status:503", times=10)
    with pytest.raises(OSError) as err:
        _read(url, confirmed_damage=frozenset())
    assert faults.classify(err.value) == faults.TRANSIENT and faults.is_throttling(err.value)


def test_damage_is_retried_once_and_confirmed_by_the_same_offset(tmp_path, sample_shards):
    """A truly truncated shard: the first read raises StreamDamaged (it might have been the
    connection); the retry meets the damage at the same byte and records it, keeping the
    samples before it."""
    data = sample_shards[0].read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:600_000])  # inside the second sample's video: the first sample is whole
    with pytest.raises(faults.StreamDamaged) as err:
        _read(str(cut), confirmed_damage=frozenset())
    where = err.value.signature
    assert where.startswith("TruncatedShard@")
    items, stats = _read(str(cut), confirmed_damage=frozenset({where}))
    letter = items[-1]
    assert isinstance(letter, DeadLetter) and letter.stage == "shard" and "same on a fresh read" in letter.message
    assert stats.shard_error and _clips(items) and stats.samples_total >= 1
    # a single-pass reader (no confirmed_damage) records the damage at once, as before
    assert _read(str(cut))[1].shard_error
