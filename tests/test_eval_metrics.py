"""PSNR, SSIM and the same-grid baseline on inputs whose right answers can be derived by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tokenizer_core.metrics import (
    PSNR_CAP,
    latent_frame_groups,
    psnr,
    same_grid_baseline,
    ssim,
    to_grid,
)


def _ramp_in_time(num_frames: int, start: float, slope: float, size: int = 16) -> torch.Tensor:
    values = start + slope * torch.arange(num_frames, dtype=torch.float32)
    return values.view(1, -1, 1, 1).expand(3, num_frames, size, size).clone()


def test_perfect_reconstruction_has_capped_psnr_and_unit_ssim():
    video = torch.randint(0, 256, (3, 5, 32, 32)).float()
    assert psnr(video, video.clone()) == PSNR_CAP
    assert ssim(video, video.clone()) == pytest.approx(1.0, abs=1e-9)


def test_psnr_of_a_known_error():
    """A uniform error of 5 levels on every pixel: MSE 25 -> 10*log10(255^2/25)."""
    video = torch.full((3, 3, 8, 8), 100.0)
    assert psnr(video, video + 5) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)


def test_ssim_drops_for_noise():
    gen = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (3, 2, 32, 32), generator=gen).float()
    noisy = (video + torch.randn(video.shape, generator=gen) * 40).clamp(0, 255)
    assert ssim(video, noisy) < 0.9


def test_latent_frame_groups_follow_the_causal_layout():
    assert latent_frame_groups(9, 4) == [(0, 1), (1, 5), (5, 9)]
    with pytest.raises(ValueError, match="1 \\+ k"):
        latent_frame_groups(8, 4)


def test_grid_is_block_means():
    """Frame 0 alone, then groups of t frames; s x s blocks in space."""
    video = torch.arange(3 * 9 * 16 * 16, dtype=torch.float32).view(3, 9, 16, 16)
    grid = to_grid(video, temporal=4, spatial=8)
    assert grid.shape == (3, 3, 2, 2)
    expected = video[1, 5:9, 8:16, 0:8].double().mean()
    assert grid[1, 2, 1, 0].item() == pytest.approx(expected.item())


def test_baseline_is_exact_on_a_constant_video():
    video = torch.full((3, 9, 16, 24), 77.0)
    assert torch.equal(same_grid_baseline(video, 4, 8), video)


def test_baseline_interpolates_linearly_between_latent_frame_centres():
    """A ramp in time: centres at frames 0, 2.5 and 6.5 hold the ramp's value there; frames in
    between are interpolated exactly, frames past the last centre are held at its value."""
    video = _ramp_in_time(9, start=10.0, slope=20.0)
    out = same_grid_baseline(video, temporal=4, spatial=8)
    expected = [round(10.0 + 20.0 * min(f, 6.5)) for f in range(9)]
    assert out[:, :, 4, 4].unique(dim=0).shape[0] == 1  # every channel the same
    assert out[0, :, 4, 4].tolist() == expected
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # spatially constant stays constant


def test_baseline_loses_detail_below_the_grid():
    """A checkerboard of 1-pixel cells averages to flat grey: the baseline cannot keep it."""
    board = ((torch.arange(16).view(-1, 1) + torch.arange(16).view(1, -1)) % 2 * 255).float()
    video = board.expand(3, 5, 16, 16).clone()
    out = same_grid_baseline(video, 4, 8)
    assert torch.all(out == 128)  # mean 127.5 rounds half to even -> 128
    assert psnr(video, out) == pytest.approx(10 * math.log10(255**2 / (127.5**2 + 0.25)), abs=0.01)


def test_colour_check_measures_what_comes_back_per_channel():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from colour_check import colour_errors

    class Greying(torch.nn.Module):  # returns every colour halfway to mid-grey
        def encode(self, x):
            return x

        def decode(self, z):
            return z * 0.5

    colours, err, back = colour_errors(Greying(), levels=3)
    assert len(colours) == 27 and err.shape == back.shape == (27, 3)
    white = colours.index((255, 255, 255))
    assert torch.allclose(err[white], torch.full((3,), 63.75), atol=0.01)  # (1 - 0.5) * 127.5
    assert torch.allclose(back[white], torch.full((3,), 191.25), atol=0.01)
    assert torch.allclose(err[colours.index((128, 128, 128))], torch.zeros(3), atol=0.3)
