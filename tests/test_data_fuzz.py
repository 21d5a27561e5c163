"""Seeded fuzzing of the tar reader and both decoders: every sample accounted, no hang, no crash,
nothing written outside the output. (A larger run with its figures: bench/fuzz.py, docs/data.md.)"""

from __future__ import annotations

import os
import random
import tempfile
import time

import pytest

from pipeline.readers.stages import iter_shard
from pipeline.records import MAX_KEY_CHARS, Clip, DeadLetter, ShardStats
from schemas.jobspec import ClipSpec, LimitSpec
from tests.fixtures.fuzz import damaged_shards, media_members, tar_bytes

SEED = 21
INPUTS = 20
LIMITS = LimitSpec(decode_timeout_s=20.0)


def fuzz_corpus(seed: int = SEED, inputs: int = INPUTS):
    """(members of one shard of mutated videos, [(label, damaged tar bytes)])."""
    rng = random.Random(seed)
    members = media_members(rng, inputs)
    return members, damaged_shards(rng, members[:8])


@pytest.fixture(scope="module")
def corpus():
    return fuzz_corpus()


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """TMPDIR of its own, so that leftovers (spooled members) would show."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return folder


def _check_accounting(items, stats: ShardStats) -> None:
    letters = [i for i in items if isinstance(i, DeadLetter) and i.stage != "shard"]
    assert stats.samples_total == stats.samples_ok + stats.samples_failed
    assert len(letters) == stats.samples_failed == sum(stats.failures.values())
    for item in items:
        key = item.key if isinstance(item, Clip) else item.sample_key
        assert len(key) <= MAX_KEY_CHARS + 20 and ".." not in key.split("/") and not key.startswith("/")


@pytest.mark.timeout(150)
@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_mutated_videos_and_damaged_tars_are_all_accounted_for(corpus, tmp_path, private_tmp, decoder):
    """20 mutated videos in one shard (held in memory, then spooled to disk), and 5
    kinds of tar damage: each sample is ok or one dead letter, a damaged stream is one shard
    error, the decoder child never hangs the reader, no temporary file is left behind."""
    members, damaged = corpus
    spec = ClipSpec(num_frames=9, resolution=(32, 32), decoder=decoder)
    media = tar_bytes(members)
    spooled = LimitSpec(decode_timeout_s=20.0, spool_mb=0.001)
    outcomes = {}
    for label, data, limits in [("media", media, LIMITS), ("spooled", media, spooled),
                                *[(label, data, LIMITS) for label, data in damaged]]:
        path = tmp_path / f"{label}.tar"
        path.write_bytes(data)
        stats = ShardStats()
        started = time.monotonic()
        items = list(iter_shard(str(path), spec, None, stats, isolate=True, limits=limits))
        assert time.monotonic() - started < 60, label
        _check_accounting(items, stats)
        outcomes[label] = (stats.samples_ok, dict(stats.failures))
        if label in ("media", "spooled"):
            assert stats.samples_total == INPUTS and stats.shard_error is None
        elif label != "size_shifted":  # a shifted size may land on a valid header by chance
            assert stats.shard_error is not None, label
        assert "decode:DecoderTimeout" not in stats.failures
    if decoder == "pyav":  # decord is not deterministic on damaged input: the same spliced MP4
        assert outcomes["media"] == outcomes["spooled"]  # gave 2 clips, 1 clip or a DecodeError
    assert not os.listdir(private_tmp)  # spooled members removed
