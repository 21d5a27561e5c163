"""The streaming tar reader: WebDataset grouping, long names, and damage detection."""

from __future__ import annotations

import io
import tarfile

import pytest

from pipeline.readers.stages import iter_shard
from pipeline.readers.tar_stream import CorruptShard, iter_samples, video_member
from pipeline.records import Clip, DeadLetter, ShardStats, safe_key
from schemas.jobspec import ClipSpec
from tests.fixtures.media import encode_video, write_tar


def _tar_bytes(members, fmt=tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_members_group_by_key_up_to_the_first_dot_of_the_base_name():
    data = _tar_bytes([("a/x1.mp4", b"v1"), ("a/x1.json", b"{}"), ("a/x1.seg.txt", b"t"),
                       ("./x2.MKV", b"v2"), ("x3.json", b"{}")])
    samples = list(iter_samples(io.BytesIO(data), "u"))
    assert [s.key for s in samples] == ["a/x1", "x2", "x3"]
    assert samples[0].members == {"mp4": b"v1", "json": b"{}", "seg.txt": b"t"}
    assert video_member(samples[1]) == "mkv" and video_member(samples[2]) is None


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_member_names_survive_gnu_and_pax_headers(fmt):
    key = "d" * 120 + "/clip_é"
    data = _tar_bytes([(f"{key}.mp4", b"v"), (f"{key}.json", b"{}")], fmt=fmt)
    (sample,) = iter_samples(io.BytesIO(data), "u")
    assert sample.names == {"mp4": f"{key}.mp4", "json": f"{key}.json"} and set(sample.members) == {"mp4", "json"}
    assert sample.key == safe_key(key) and sample.key.startswith("d" * 120 + "/clip__~")  # é escaped


def test_truncation_inside_a_member_yields_earlier_samples_then_raises():
    data = _tar_bytes([("a.mp4", b"1" * 3000), ("b.mp4", b"2" * 3000), ("c.mp4", b"3" * 3000)])
    cut = data[: 512 + 3072 + 512 + 1000]  # inside b's data
    stream = iter_samples(io.BytesIO(cut), "u")
    assert next(stream).key == "a"
    with pytest.raises(CorruptShard) as err:
        next(stream)
    assert err.value.error_type == "TruncatedShard"


def test_a_bad_header_checksum_is_damage_not_a_silent_end():
    data = bytearray(_tar_bytes([("a.mp4", b"1" * 100), ("b.mp4", b"2" * 100)]))
    data[1024 + 10] ^= 0xFF  # second header's name field
    stream = iter_samples(io.BytesIO(bytes(data)), "u")
    assert next(stream).key == "a"
    with pytest.raises(CorruptShard, match="checksum"):
        next(stream)
    # (its damaged successor b is not a sample at all: nothing of it was read)
    # the standard library's stream mode would have ended quietly here after one member
    with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r|") as tar:
        assert [m.name for m in tar] == ["a.mp4"]


def test_iter_shard_on_a_truncated_shard_keeps_earlier_clips_and_records_the_shard_error(tmp_path):
    video = encode_video(64, 48, 9)
    whole = write_tar(tmp_path / "t.tar", [("a.mp4", video), ("b.mp4", video), ("c.mp4", video)])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: 2 * (512 + len(video)) + 300])  # inside b or c's data
    stats = ShardStats()
    out = list(iter_shard(str(cut), ClipSpec(num_frames=9, resolution=(32, 32)), None, stats, isolate=False))
    clips = [x for x in out if isinstance(x, Clip)]
    assert [c.sample_key for c in clips] == ["a"]
    assert isinstance(out[-1], DeadLetter) and out[-1].stage == "shard" and out[-1].sample_key == ""
    assert out[-1].error_type == "TruncatedShard" and stats.shard_error.startswith("TruncatedShard")
    assert stats.samples_total == stats.samples_ok == 1


def test_a_key_repeated_later_in_the_shard_is_a_dead_letter_not_a_key_collision(tmp_path):
    video = encode_video(64, 48, 9)
    shard = write_tar(tmp_path / "dup.tar", [("a.mp4", video), ("b.mp4", video), ("a.mp4", video)])
    stats = ShardStats()
    out = list(iter_shard(str(shard), ClipSpec(num_frames=9, resolution=(32, 32)), None, stats, isolate=False))
    assert [(x.sample_key, getattr(x, "reason", "clip")) for x in out] == [
        ("a", "clip"), ("b", "clip"), ("a", "read:DuplicateKey")]
    assert stats.samples_total == 3 and stats.samples_failed == 1
