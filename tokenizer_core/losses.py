"""Reconstruction losses for training tokenizers.

Shape legend: video, recon: [B, 3, T, H, W] in [-1, 1].

total = l1 * |recon - video|
      + mse * (recon - video)^2                   the error PSNR measures
      + ssim * (1 - SSIM(recon, video))           structural term, per frame (fold T into B)
      + temporal * |d_t recon - d_t video|        d_t = difference of consecutive frames

The temporal term penalises flicker and motion errors that a per-frame loss averages away.
There is no perceptual (VGG/LPIPS) term: its pretrained weights are not available offline
here, and nothing may be downloaded at run time. Cosmos' own recipe (L1 + VGG perceptual)
would need them; L1 + SSIM is the closest weight-free substitute.
"""

from __future__ import annotations

import torch

# the loss section of the training config is the one definition of the weights and defaults
from schemas.training import LossSpec as LossWeights
from tokenizer_core.metrics import ssim_map


def frames_as_images(video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W]."""
    b, c, t, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def structural_loss(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM over all frames; computed in fp32 (the variance terms cancel badly in bf16)."""
    return 1.0 - ssim_map(frames_as_images(recon.float()), frames_as_images(video.float()), 2.0).mean()


def temporal_loss(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """L1 between frame-to-frame differences; zero for single-frame clips."""
    if video.shape[2] < 2:
        return recon.new_zeros(())
    d_recon = recon[:, :, 1:] - recon[:, :, :-1]
    d_video = video[:, :, 1:] - video[:, :, :-1]
    return (d_recon - d_video).abs().mean()


def reconstruction_loss(
    recon: torch.Tensor, video: torch.Tensor, weights: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted total loss and its parts (as floats, for logging)."""
    recon = recon.float()
    video = video.float()
    error = recon - video
    parts = {"l1": error.abs().mean()}
    if weights.mse:
        parts["mse"] = error.square().mean()
    if weights.ssim:
        parts["ssim"] = structural_loss(recon, video)
    if weights.temporal:
        parts["temporal"] = temporal_loss(recon, video)
    total = recon.new_zeros(())
    for name, value in parts.items():
        total = total + getattr(weights, name) * value
    logged = {name: float(value.detach()) for name, value in parts.items()}
    logged["loss"] = float(total.detach())
    return total, logged


__all__ = ["LossWeights", "reconstruction_loss", "structural_loss", "temporal_loss", "frames_as_images"]
