"""Native aspect ratios, shot cuts, the motion filter and whole-video rows, on real video (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.readers.clips import DecodedClip, Grid, VideoDone, cut_clips, frame_geometry, motion_score
from pipeline.readers.stages import iter_shard
from pipeline.records import Clip, ShardStats
from schemas.jobspec import ClipSpec, ShortSide
from tests.fixtures.media import encode_frames, real_frames, write_tar

JOIN = 30  # frame where the joined video cuts from one real clip to another


@pytest.fixture(scope="module")
def joined(real_videos) -> bytes:
    """A hard cut: 30 frames of carphone, then 40 of bigbuckbunny, both 96x64."""
    first = real_frames(real_videos["carphone_pristine"], JOIN, 96, 64)
    second = real_frames(real_videos["bigbuckbunny"], 40, 96, 64, start=40)
    return encode_frames(np.concatenate([first, second]), 96, 64)


@pytest.fixture(scope="module")
def shapes(real_videos) -> dict[str, bytes]:
    """Portrait (9:16) and 16:9 real sources made from bigbuckbunny and bikes."""
    return {"portrait": encode_frames(real_frames(real_videos["bigbuckbunny"], 12, 72, 128), 72, 128),
            "wide": encode_frames(real_frames(real_videos["bikes"], 12, 128, 72), 128, 72)}


def _clips(items) -> list[DecodedClip]:
    return [x for x in items if isinstance(x, DecodedClip)]


@pytest.mark.parametrize(("name", "hw"), [("portrait", (80, 48)), ("wide", (48, 80))])
def test_short_side_keeps_the_aspect_and_rounds_sides_to_the_factor(shapes, name, hw):
    """short_side 48 on a 72x128 portrait: width 48, height 85.3 -> 80 (16 | both); 16:9 mirrors it."""
    spec = ClipSpec(num_frames=5, resolution=ShortSide(short_side=48))
    clips = _clips(cut_clips(shapes[name], spec, grid=Grid(4, 16)))
    assert clips and all(c.frames.shape == (5, *hw, 3) for c in clips)


def test_short_side_crops_only_the_rounding_and_max_long_side_caps_the_long_side():
    assert frame_geometry(1280, 720, ShortSide(short_side=256), 16) == ((455, 256), (256, 448))
    assert frame_geometry(720, 1280, ShortSide(short_side=256, max_long_side=384), 16) == ((216, 384), (384, 208))
    assert frame_geometry(640, 480, (256, 256)) == ((341, 256), (256, 256))  # [H, W]: as before


def test_no_clip_spans_a_hard_cut(joined):
    """The cut is found at the join; clips restart there and none holds frames from both sides."""
    items = list(cut_clips(joined, ClipSpec(num_frames=9, split_scenes=True, resolution=(64, 96))))
    clips = _clips(items)
    assert items[-1] == VideoDone(len(clips), 70, pytest.approx(2.8), cuts=1)
    assert [(c.start_frame, c.scene, c.scene_start) for c in clips] == [
        (0, 0, 0), (9, 0, 0), (18, 0, 0), (30, 1, 30), (39, 1, 30), (48, 1, 30), (57, 1, 30)]
    assert all(c.start_frame + 9 <= JOIN or c.start_frame >= JOIN for c in clips)
    assert [c.index for c in clips] == list(range(len(clips)))  # indices count on over the video


def test_static_clip_is_dropped_and_counted_and_accounting_adds_up(tmp_path, real_videos, joined):
    still = np.repeat(real_frames(real_videos["carphone_pristine"], 1, 96, 64), 20, axis=0)
    shard = write_tar(tmp_path / "motion-000000.tar", [("still.mp4", encode_frames(still, 96, 64)),
                                                       ("moving.mp4", joined)])
    stats = ShardStats()
    spec = ClipSpec(num_frames=9, resolution=(64, 96), min_motion=0.5)
    clips = [c for c in iter_shard(str(shard), spec, None, stats, isolate=False) if isinstance(c, Clip)]
    assert {c.sample_key for c in clips} == {"moving"} and all(c.motion >= 0.5 for c in clips)
    assert stats.notes == {"low_motion": 2}  # both of the still video's clips
    assert stats.samples_total == stats.samples_ok + stats.samples_failed == 2
    assert stats.clips == len(clips) == 7


def test_motion_score_is_the_mean_absolute_frame_difference():
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    frames[1] = 6
    assert motion_score(frames) == 6.0 and motion_score(frames[:1]) == 0.0


def test_whole_video_rows_arrive_as_chunks_of_the_longest_prefix(joined):
    """num_frames: all with a cut: one row per shot, 1 + k*t frames each, chunked as documented."""
    spec = ClipSpec(num_frames="all", split_scenes=True, resolution=(64, 96), chunk_frames=8, min_motion=0.0)
    pieces = _clips(cut_clips(joined, spec, grid=Grid(4, 8)))
    rows: dict[int, list[DecodedClip]] = {}
    for p in pieces:
        rows.setdefault(p.index, []).append(p)
    lengths = {i: [len(p.frames) for p in parts] for i, parts in rows.items()}
    assert lengths == {0: [9, 8, 8, 4], 1: [9, 8, 8, 8, 4]}  # shots of 30 and 40 -> rows of 29 and 37
    assert [p.final for p in rows[1]] == [False] * 4 + [True]
    assert rows[1][0].start_frame == rows[1][0].scene_start == JOIN
    # the chunks are the decoded frames themselves: same as 37-frame clips cut from the shot
    fixed = _clips(cut_clips(joined, ClipSpec(num_frames=37, stride=JOIN, resolution=(64, 96))))
    assert fixed[1].start_frame == JOIN
    assert np.array_equal(np.concatenate([p.frames for p in rows[1]]), fixed[1].frames)
    assert rows[1][-1].motion == pytest.approx(motion_score(fixed[1].frames))


def test_max_frames_caps_a_row_and_the_rest_starts_the_next(joined):
    spec = ClipSpec(num_frames="all", resolution=(64, 96), chunk_frames=8, max_frames=30)
    pieces = _clips(cut_clips(joined, spec, grid=Grid(4, 8)))
    starts = {p.index: p.start_frame for p in pieces}
    frames = {i: sum(len(p.frames) for p in pieces if p.index == i) for i in starts}
    assert starts == {0: 0, 1: 29, 2: 58} and frames == {0: 29, 1: 29, 2: 9}  # 70 = 29 + 29 + 12 -> 9
