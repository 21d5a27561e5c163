"""Clip sampling (rate, stride, max clips, too short), resize + crop, and both decoders."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.readers.clips import ClipPlan, DecodedClip, VideoDone, center_crop, cut_clips, scaled_size
from schemas.jobspec import ClipSpec
from tests.fixtures.media import encode_video


def _plan(src_fps=25.0, fps=None, num_frames=5, stride=None, max_clips=None, src_frames=100) -> ClipPlan:
    return ClipPlan(src_fps, fps or src_fps, num_frames, stride or num_frames, max_clips, src_frames)


def test_resampling_to_a_lower_rate_takes_the_nearest_earlier_source_frame():
    plan = _plan(src_fps=25.0, fps=10.0, num_frames=3, src_frames=20)
    assert [plan.source_index(j) for j in range(8)] == [0, 2, 5, 7, 10, 12, 15, 17]
    assert list(plan.wanted_sources()) == [0, 2, 5, 7, 10, 12]  # 8 sampled frames -> 2 clips of 3
    assert plan.expected_clips() == 2


def test_stride_larger_than_the_clip_skips_the_frames_in_between():
    plan = _plan(num_frames=3, stride=10, src_frames=25)
    assert list(plan.wanted_sources()) == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert plan.expected_clips() == 3


def test_max_clips_stops_the_plan_early_even_for_endless_video():
    plan = _plan(num_frames=4, stride=2, max_clips=3, src_frames=None)
    assert list(plan.wanted_sources()) == list(range(8))
    assert _plan(num_frames=4, stride=2, max_clips=3, src_frames=1000).expected_clips() == 3


def test_video_shorter_than_one_clip_plans_no_clip():
    assert _plan(num_frames=17, src_frames=16).expected_clips() == 0


def _red(frames: np.ndarray) -> np.ndarray:
    return frames[:, 8:-8, 8:-8, 0].reshape(len(frames), -1).mean(axis=1)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_clips_hold_exactly_the_planned_source_frames(decoder):
    # frame i of the test video has red = 8 * i: the pixels say which source frame we got
    data = encode_video(64, 48, 30, fps=25)
    spec = ClipSpec(num_frames=3, fps=10.0, stride=2, max_clips_per_video=3, resolution=(32, 32), decoder=decoder)
    items = list(cut_clips(data, spec))
    clips = [x for x in items if isinstance(x, DecodedClip)]
    assert isinstance(items[-1], VideoDone) and items[-1].clips == 3
    assert [(c.index, c.start_frame, c.fps) for c in clips] == [(0, 0, 10.0), (1, 2, 10.0), (2, 4, 10.0)]
    for clip in clips:
        assert clip.frames.shape == (3, 32, 32, 3) and clip.frames.dtype == np.uint8
        expected = [8 * int(j * 2.5) for j in range(clip.start_frame, clip.start_frame + 3)]
        np.testing.assert_allclose(_red(clip.frames), expected, atol=4)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_a_too_short_video_gives_no_clip_but_completes(decoder):
    items = list(cut_clips(encode_video(64, 48, 5), ClipSpec(num_frames=9, resolution=(32, 32), decoder=decoder)))
    assert len(items) == 1 and isinstance(items[0], VideoDone) and items[0].clips == 0


def test_scaled_size_covers_the_target_with_the_shorter_side():
    assert scaled_size(1280, 720, (256, 256)) == (455, 256)
    assert scaled_size(272, 640, (256, 256)) == (256, 602)
    assert scaled_size(640, 272, (128, 512)) == (512, 218)  # width-bound when the target is wide


def test_both_decoders_agree_on_real_video(real_videos):
    data = real_videos["bikes"].read_bytes()  # 640x272 H.264, 25 fps, 250 frames
    results = {}
    for decoder in ("decord", "pyav"):
        spec = ClipSpec(num_frames=9, stride=40, max_clips_per_video=4, resolution=(64, 64), decoder=decoder)
        results[decoder] = [x for x in cut_clips(data, spec) if isinstance(x, DecodedClip)]
    assert [c.start_frame for c in results["decord"]] == [c.start_frame for c in results["pyav"]] == [0, 40, 80, 120]
    for a, b in zip(results["decord"], results["pyav"], strict=True):
        assert a.frames.shape == b.frames.shape == (9, 64, 64, 3)
        # same frames; the scalers differ slightly (decord's own swscale settings vs area)
        assert np.abs(a.frames.astype(int) - b.frames).mean() < 4
        assert a.frames.std() > 20  # real picture content, not a blank


def test_decord_seeking_across_gaps_returns_the_same_frames_as_sequential_pyav(real_videos):
    data = real_videos["bikes"].read_bytes()  # keyframes at 0, 30, 76, 137, 187, 242
    results = {}
    for decoder in ("decord", "pyav"):
        spec = ClipSpec(num_frames=5, stride=90, resolution=(64, 64), decoder=decoder)
        results[decoder] = [x for x in cut_clips(data, spec) if isinstance(x, DecodedClip)]
    assert [c.start_frame for c in results["decord"]] == [0, 90, 180]
    for a, b in zip(results["decord"], results["pyav"], strict=True):
        assert np.abs(a.frames.astype(int) - b.frames).mean() < 4


def test_center_crop_takes_the_middle_window_without_copying():
    frames = np.zeros((2, 100, 300, 3), np.uint8)
    frames[:, :, 140:160] = 255  # a white vertical band in the middle
    out = center_crop(frames, (100, 20))
    assert out.shape == (2, 100, 20, 3) and out.min() == 255 and np.shares_memory(out, frames)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_more_decoder_threads_give_the_same_frames(real_videos, decoder):
    """clips.decoder_threads reaches the codec; threading changes speed, never the frames."""
    data = real_videos["bikes"].read_bytes()
    results = {}
    for threads in (1, 2):
        spec = ClipSpec(num_frames=5, stride=60, max_clips_per_video=3, resolution=(64, 64), decoder=decoder,
                        decoder_threads=threads)
        results[threads] = [x for x in cut_clips(data, spec) if isinstance(x, DecodedClip)]
    assert [c.start_frame for c in results[1]] == [c.start_frame for c in results[2]] == [0, 60, 120]
    for a, b in zip(results[1], results[2], strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
