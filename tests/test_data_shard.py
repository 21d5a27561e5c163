"""iter_shard end to end on a corpus of good and bad files: every sample accounted for."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.readers.isolation import CRASH_ENV
from pipeline.readers.stages import iter_shard
from pipeline.records import Clip, DeadLetter, ShardStats, clip_key, shard_id
from schemas.jobspec import ClipSpec
from tests.fixtures.media import BAD_CORPUS_EXPECTED

SPEC = ClipSpec(num_frames=9, resolution=(32, 32))


def _run(url, spec=SPEC, isolate=True):
    stats = ShardStats()
    out = list(iter_shard(str(url), spec, None, stats, isolate=isolate))
    return out, stats


def _outcomes(out, stats):
    """sample key -> 'ok' or the dead letter's reason."""
    failed = {x.sample_key: x.reason for x in out if isinstance(x, DeadLetter)}
    ok = {x.sample_key: "ok" for x in out if isinstance(x, Clip)}
    assert not set(ok) & set(failed), "a failed sample must not also yield clips"
    return {**failed, **ok}


@pytest.mark.parametrize("decoder,isolate", [("decord", True), ("pyav", False)])
def test_every_sample_of_the_bad_corpus_is_accounted_for(bad_corpus_shard, decoder, isolate):
    spec = ClipSpec(num_frames=9, resolution=(32, 32), decoder=decoder)
    out, stats = _run(bad_corpus_shard, spec, isolate)
    outcomes = _outcomes(out, stats)
    expected = {k: v.split(":")[0] if v.startswith("ok") else v for k, v in BAD_CORPUS_EXPECTED.items()}
    expected["too_short"] = "too_short"  # ok, but no clip and no dead letter
    outcomes["too_short"] = "too_short" if "too_short" not in outcomes else outcomes["too_short"]
    assert outcomes == expected
    failed = [v for v in BAD_CORPUS_EXPECTED.values() if not v.startswith("ok")]
    assert stats.samples_total == len(BAD_CORPUS_EXPECTED) == stats.samples_ok + stats.samples_failed
    assert stats.samples_failed == len(failed) and sum(stats.failures.values()) == len(failed)
    assert stats.to_dict()["notes"] == {"too_short": 1, "bad_sidecar": 1} and stats.shard_error is None
    clips = [x for x in out if isinstance(x, Clip)]
    assert stats.clips == len(clips) and stats.frames == 9 * len(clips)
    assert stats.seconds["decode"] > 0 and stats.video_seconds > 0


def test_clips_carry_keys_meta_and_sampled_positions(bad_corpus_shard):
    out, _ = _run(bad_corpus_shard, isolate=False)
    clips = [x for x in out if isinstance(x, Clip)]
    sid = shard_id(str(bad_corpus_shard))
    assert len({c.key for c in clips}) == len(clips)
    for clip in clips:
        assert clip.key == clip_key(sid, clip.sample_key, clip.clip_index)
        assert clip.start_frame == 9 * clip.clip_index and clip.frames.shape == (9, 32, 32, 3)
        if clip.sample_key == "bad_sidecar":
            assert clip.meta is None
        else:
            assert json.loads(clip.meta) == {"name": clip.sample_key}
    real = [c for c in clips if c.sample_key == "real_carphone"]
    assert len(real) == 120 // 9 and real[0].fps == pytest.approx(30000 / 1001, rel=1e-3)
    letters = {x.sample_key: x for x in out if isinstance(x, DeadLetter)}
    assert letters["audio_only"].source_url == str(bad_corpus_shard) and letters["audio_only"].message


def test_a_segfaulting_decoder_becomes_a_dead_letter_and_the_shard_goes_on(bad_corpus_shard, monkeypatch):
    monkeypatch.setenv(CRASH_ENV, "good_vp9")
    out, stats = _run(bad_corpus_shard, isolate=True)
    outcomes = _outcomes(out, stats)
    assert outcomes["good_vp9"] == "decode:DecoderCrashed"
    crash = next(x for x in out if isinstance(x, DeadLetter) and x.sample_key == "good_vp9")
    assert "SIGSEGV" in crash.message
    # the samples after the crash were decoded by a fresh child process
    assert outcomes["real_carphone"] == "ok" and outcomes["bad_sidecar"] == "ok"
    assert stats.samples_total == stats.samples_ok + stats.samples_failed == len(BAD_CORPUS_EXPECTED)


def test_the_bundled_sample_shards_decode_whole(sample_shards):
    for url in sample_shards:
        out, stats = _run(url, ClipSpec(num_frames=17, resolution=(64, 64)), isolate=True)
        assert stats.samples_ok == stats.samples_total == 2 and not stats.failures
        assert all(isinstance(x, Clip) and x.meta for x in out) and stats.clips == len(out) > 0


def test_a_missing_shard_raises_instead_of_becoming_a_dead_letter(tmp_path):
    stats = ShardStats()
    with pytest.raises(FileNotFoundError):
        list(iter_shard(str(tmp_path / "gone.tar"), SPEC, None, stats))
    assert stats.samples_total == 0 and stats.shard_error is None


def test_the_crash_hook_is_off_without_its_environment_variable(bad_corpus_shard):
    assert CRASH_ENV not in os.environ
    out, stats = _run(bad_corpus_shard, isolate=True)
    assert "decode:DecoderCrashed" not in stats.failures


def test_a_hung_decoder_is_killed_after_the_timeout_and_replaced(monkeypatch):
    from pipeline.readers.decode import VideoError
    from pipeline.readers.isolation import HANG_ENV, DecodeWorker
    from tests.fixtures.media import encode_video

    monkeypatch.setenv(HANG_ENV, "stuck")
    data = encode_video(64, 48, 9)
    with DecodeWorker(timeout_s=3.0) as worker:  # a fresh child starts within it on a loaded machine
        with pytest.raises(VideoError) as err:
            list(worker.cut_clips("stuck", data, SPEC))
        assert err.value.error_type == "DecoderTimeout" and "SIGKILL" in str(err.value)
        assert "fresh decoder process" in str(err.value)  # a hang is transient: it was tried twice
        items = list(worker.cut_clips("fine", data, SPEC))
        assert len(items) == 2 and items[0].frames.shape == (9, 32, 32, 3)
        assert worker.restarts == 2 and worker.retried_samples == 1


@pytest.mark.parametrize("kind", ["kill", "memory"])
def test_a_decoder_child_that_fails_once_is_retried_in_a_fresh_child(tmp_path, monkeypatch, bad_corpus_shard, kind):
    """A child SIGKILLed (as by the OOM killer) or out of memory on one sample is transient: the
    sample is decoded again in a fresh child and its clips are kept; nothing becomes a dead letter."""
    from pipeline.readers.isolation import FAULT_ONCE_ENV

    flag = tmp_path / "fault-done"
    monkeypatch.setenv(FAULT_ONCE_ENV, f"real_carphone:{kind}:{flag}")
    clean, clean_stats = _run(bad_corpus_shard, isolate=True)
    flag.unlink()
    out, stats = _run(bad_corpus_shard, isolate=True)
    assert flag.exists()  # the fault really happened, in the child
    assert _outcomes(out, stats) == _outcomes(clean, clean_stats)
    assert [c.key for c in out if isinstance(c, Clip)] == [c.key for c in clean if isinstance(c, Clip)]
    assert not any(reason.startswith("decode:Decoder") for reason in stats.failures)


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_a_video_cut_off_mid_data_keeps_its_whole_clips_or_fails_cleanly(tmp_path, decoder):
    from tests.fixtures.media import encode_video, write_tar

    full = encode_video(64, 48, 60, faststart=True)  # index first: the cut loses frames, not the index
    shard = write_tar(tmp_path / "cut.tar", [("cut.mp4", full[: int(len(full) * 0.6)]), ("cut.json", b"{}")])
    out, stats = _run(shard, ClipSpec(num_frames=9, resolution=(32, 32), decoder=decoder), isolate=False)
    assert stats.samples_total == stats.samples_ok + stats.samples_failed == 1
    if decoder == "pyav":  # PyAV delivers the frames before the cut, then reports the error
        assert stats.samples_ok == 1 and stats.notes["decode_error_after_clips"] == 1
        assert 1 <= len(out) < 60 // 9 and all(isinstance(x, Clip) for x in out)
    else:  # decord's reader fails before its first frame
        assert [x.reason for x in out] == ["decode:DecodeError"]
