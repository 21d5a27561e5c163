"""`limits:` bound what one untrusted sample may cost; each bound crossed is a dead letter naming it."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from pipeline.readers.isolation import HANG_ENV
from pipeline.readers.stages import iter_shard
from pipeline.readers.tar_stream import CorruptShard, iter_samples
from pipeline.records import Clip, DeadLetter, ShardStats
from schemas.config import SpecError
from schemas.jobspec import ClipSpec, LimitSpec, parse_job_spec
from tests.fixtures.media import encode_video, write_tar

SPEC = ClipSpec(num_frames=9, resolution=(32, 32))
MIB = 2**20


@pytest.fixture(scope="module")
def video() -> bytes:
    return encode_video(64, 48, 20)


def _run(shard, limits: LimitSpec, isolate: bool = False, spec: ClipSpec = SPEC):
    stats = ShardStats()
    items = list(iter_shard(str(shard), spec, None, stats, isolate=isolate, limits=limits))
    assert stats.samples_total == stats.samples_ok + stats.samples_failed
    reasons = {i.sample_key: i.reason for i in items if isinstance(i, DeadLetter)}
    return items, reasons, stats


def test_a_video_over_spool_mb_is_read_from_a_temporary_file_removed_with_the_next_sample(tmp_path, video):
    """The spooled member is byte-identical on disk, absent from memory, and gone once iteration moves on."""
    shard = write_tar(tmp_path / "s.tar", [("a.mp4", video), ("a.json", b"{}"), ("b.mp4", video)])
    samples = iter_samples(open(shard, "rb"), "u", LimitSpec(spool_mb=len(video) / 2 / MIB))
    first = next(samples)
    path = first.files["mp4"]
    assert "mp4" not in first.members and first.members["json"] == b"{}"
    with open(path, "rb") as fh:
        assert fh.read() == video
    second = next(samples)
    assert not os.path.exists(path) and "mp4" in second.files
    samples.close()
    assert not os.path.exists(second.files["mp4"])


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_a_spooled_video_decodes_to_the_same_clips_in_the_child(tmp_path, video, decoder):
    """The decoder child gets the temp file's path instead of the bytes; the clips are the same."""
    shard = write_tar(tmp_path / "s.tar", [("a.mp4", video)])
    spec = ClipSpec(num_frames=9, resolution=(32, 32), decoder=decoder)
    held, _, _ = _run(shard, LimitSpec(), isolate=True, spec=spec)
    spooled, _, _ = _run(shard, LimitSpec(spool_mb=1 / MIB), isolate=True, spec=spec)
    assert len(held) == len(spooled) == 2
    assert all((a.frames == b.frames).all() for a, b in zip(held, spooled, strict=True))


def test_video_and_sidecar_budgets_refuse_the_sample_and_the_next_one_still_reads(tmp_path, video):
    """Over max_video_mb: read:MemberTooLarge; sidecars over max_sidecar_mb (each counted as at
    least a 512-byte block, so many empty members count too): read:SidecarTooLarge."""
    many_empty = [(f"c.s{i}", b"") for i in range(40)]
    shard = write_tar(tmp_path / "s.tar", [("a.mp4", video), ("b.mp4", video), ("b.json", b"x" * 30_000),
                                           ("c.mp4", video), *many_empty, ("d.mp4", video)])
    limits = LimitSpec(max_video_mb=(len(video) + 1) / MIB, max_sidecar_mb=16_000 / MIB)
    items, reasons, stats = _run(shard, limits)
    assert reasons == {"b": "read:SidecarTooLarge", "c": "read:SidecarTooLarge"}
    assert [i.sample_key for i in items if isinstance(i, Clip)] == ["a", "a", "d", "d"]
    tight = LimitSpec(max_video_mb=(len(video) - 1) / MIB)
    _, reasons, stats = _run(write_tar(tmp_path / "t.tar", [("a.mp4", video), ("b.mp4", b"0" * 10)]), tight)
    assert reasons == {"a": "read:MemberTooLarge", "b": "decode:NotAContainer"}


def test_frame_pixels_and_frame_count_are_checked_before_decoding(tmp_path, video):
    """max_frame_pixels from the container's frame size; max_frames from its frame count."""
    shard = write_tar(tmp_path / "s.tar", [("a.mp4", video), ("big.mp4", encode_video(128, 96, 9))])
    _, reasons, _ = _run(shard, LimitSpec(max_frame_pixels=64 * 48))
    assert reasons == {"big": "decode:FrameTooLarge"}
    items, reasons, _ = _run(shard, LimitSpec(max_frames=12))  # a's 2 clips need 18 of its 20 frames
    assert reasons == {"a": "decode:TooManyFrames"} and len(items) == 2
    one_clip = ClipSpec(num_frames=9, resolution=(32, 32), max_clips_per_video=1)
    _, reasons, _ = _run(shard, LimitSpec(max_frames=12), spec=one_clip)
    assert reasons == {}  # a long video is fine when the clips only need its start


def test_frames_of_a_video_without_a_frame_count_are_bounded_while_decoding(tmp_path):
    """WebM does not state its frame count: decoding stops at max_frames with the same reason."""
    webm = encode_video(64, 48, 20, codec="libvpx-vp9", fmt="webm")
    _, reasons, _ = _run(write_tar(tmp_path / "s.tar", [("w.webm", webm)]), LimitSpec(max_frames=5))
    assert reasons == {"w": "decode:TooManyFrames"}


def test_decode_timeout_is_the_limits_setting(tmp_path, video, monkeypatch):
    """A decoder child silent for limits.decode_timeout_s is killed: decode:DecoderTimeout."""
    monkeypatch.setenv(HANG_ENV, "a")
    shard = write_tar(tmp_path / "s.tar", [("a.mp4", video), ("b.mp4", video)])
    _, reasons, stats = _run(shard, LimitSpec(decode_timeout_s=3.0), isolate=True)
    assert reasons == {"a": "decode:DecoderTimeout"} and stats.samples_ok == 1


def test_a_shard_over_max_samples_per_shard_fails_as_a_shard(tmp_path, video):
    shard = write_tar(tmp_path / "s.tar", [(f"v{i}.mp4", video) for i in range(3)])
    items, _, stats = _run(shard, LimitSpec(max_samples_per_shard=2))
    assert stats.samples_total == 2 and stats.shard_error.startswith("TooManySamples")
    assert isinstance(items[-1], DeadLetter) and items[-1].reason == "shard:TooManySamples"


def test_a_long_name_header_claiming_gigabytes_is_damage_not_a_buffer(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("x" * 200 + ".mp4")  # GNU 'L' header before it
        info.size = 1
        tar.addfile(info, io.BytesIO(b"v"))
    data = bytearray(buf.getvalue())
    data[124:136] = b"%011o\0" % (2 * 1024**3)  # the 'L' header's size field: 2 GiB
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(CorruptShard, match="claims"):
        list(iter_samples(io.BytesIO(bytes(data)), "u"))


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_a_playlist_posing_as_a_video_never_opens_the_file_it_names(tmp_path, decoder):
    """An HLS playlist naming a local file: decord would read that file from a playlist in memory,
    PyAV from a spooled file; tokenmill refuses the member first (decode:NotAContainer)."""
    target = tmp_path / "secret.ts"
    target.write_bytes(encode_video(64, 48, 20, fmt="mpegts"))
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\n{target}\n#EXT-X-ENDLIST\n".encode()
    shard = write_tar(tmp_path / "s.tar", [("p.mp4", playlist), ("q.mp4", playlist)])
    spec = ClipSpec(num_frames=9, resolution=(32, 32), decoder=decoder)
    for limits in (LimitSpec(), LimitSpec(spool_mb=1 / MIB)):
        items, reasons, _ = _run(shard, limits, isolate=True, spec=spec)
        assert reasons == {"p": "decode:NotAContainer", "q": "decode:NotAContainer"}, items


def test_limits_are_a_validated_spec_section():
    base = {"input": {"shards": "/x.tar"}, "tokenizer": {"name": "DV4x8x8-tiny"}, "output": {"uri": "/o"}}
    spec = parse_job_spec({**base, "limits": {"max_frames": 100, "spool_mb": 1}})
    assert spec.limits.max_frames == 100 and spec.limits.in_bytes("spool_mb") == MIB
    assert parse_job_spec(base).limits == LimitSpec()
    with pytest.raises(SpecError, match="limits.max_frames"):
        parse_job_spec({**base, "limits": {"max_frames": 0}})
    with pytest.raises(SpecError, match="limits.max_bytes"):
        parse_job_spec({**base, "limits": {"max_bytes": 1}})
