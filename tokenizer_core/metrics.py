"""Reconstruction quality: PSNR, SSIM and the same-grid baseline.

Shape legend (all functions work on one clip at a time, channels first):
    video: [3, T, H, W] float, pixel values on the [0, 255] scale
    grid:  [3, T', H/s, W/s] with T' = 1 + (T - 1) / t

PSNR and SSIM are computed over all frames of a clip on [0, 255] RGB. PSNR uses one mean
squared error over the whole clip (every frame, pixel and channel); a perfect reconstruction
has infinite PSNR, reported as `PSNR_CAP` so that means and JSON stay finite. SSIM is the
classic single-scale index (Wang et al. 2004, Gaussian window 11, sigma 1.5, K1=0.01,
K2=0.03), computed per frame and channel over valid windows and averaged.

The same-grid baseline answers "what would the token grid hold if each cell kept its mean
colour": the clip is averaged down to the tokenizer's grid (frame 0 alone, then groups of t
frames, matching the causal tokenizer's time layout; s x s blocks in space), then upsampled
back: linear in time between the latent frames' centres (held constant past the last
centre), bicubic in space. It keeps 3 full-precision numbers per grid cell; a discrete token
keeps log2(vocab) bits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PSNR_CAP = 100.0  # dB reported for an exact reconstruction (MSE == 0)
PIXEL_MAX = 255.0


def to_pixels(video: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model output -> [0, 255] values a viewer would see (clamped, rounded), float32."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round()


def from_uint8_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] frames -> float [3, T, H, W] on the [0, 255] scale."""
    return frames.permute(3, 0, 1, 2).float()


def psnr(reference: torch.Tensor, test: torch.Tensor) -> float:
    """PSNR in dB over the whole clip on [0, 255]; `PSNR_CAP` when the two are identical."""
    _check_same_shape(reference, test)
    return psnr_of_mse(torch.mean((reference.double() - test.double()) ** 2).item())


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on [0, 255]; `PSNR_CAP` for zero."""
    if mse <= 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(PIXEL_MAX**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float, window: int = 11) -> torch.Tensor:
    """Per-position SSIM of image batches x, y: [N, C, H, W] -> [N, C, H-w+1, W-w+1].

    Differentiable (the training loss uses it too). The window shrinks for images smaller
    than 11 pixels so tiny test inputs still work.
    """
    window = min(window, x.shape[-1], x.shape[-2])
    g = _gaussian_window(window).to(device=x.device, dtype=x.dtype)
    channels = x.shape[1]
    # separable Gaussian: a row filter then a column filter, one group per channel
    kx = g.view(1, 1, 1, -1).expand(channels, 1, 1, window)
    ky = g.view(1, 1, -1, 1).expand(channels, 1, window, 1)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(z, kx, groups=channels), ky, groups=channels)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def ssim(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Mean SSIM over all frames and channels of two [3, T, H, W] clips on [0, 255]."""
    _check_same_shape(reference, test)
    ref = reference.double().permute(1, 0, 2, 3)  # frames as the batch: [T, 3, H, W]
    out = test.double().permute(1, 0, 2, 3)
    return float(ssim_map(ref, out, PIXEL_MAX).mean().item())


def latent_frame_groups(num_frames: int, temporal: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of each latent frame: frame 0 alone, then groups of t."""
    if temporal < 1 or (num_frames - 1) % temporal != 0:
        raise ValueError(f"num_frames must be 1 + k * {temporal}, got {num_frames}")
    groups = [(0, 1)]
    groups += [(start, start + temporal) for start in range(1, num_frames, temporal)]
    return groups


def to_grid(video: torch.Tensor, temporal: int, spatial: int) -> torch.Tensor:
    """Average a clip down to the token grid: [3, T, H, W] -> [3, T', H/s, W/s]."""
    _, num_frames, height, width = video.shape
    if height % spatial or width % spatial:
        raise ValueError(f"height and width must be multiples of {spatial}, got {height}x{width}")
    x = video.double()
    frames = torch.stack([x[:, a:b].mean(dim=1) for a, b in latent_frame_groups(num_frames, temporal)], dim=1)
    return F.avg_pool2d(frames.permute(1, 0, 2, 3), spatial).permute(1, 0, 2, 3)


def _time_weights(num_frames: int, temporal: int) -> torch.Tensor:
    """[T, T'] linear-interpolation weights between latent-frame centres (edges held)."""
    groups = latent_frame_groups(num_frames, temporal)
    centres = [(a + b - 1) / 2 for a, b in groups]
    weights = torch.zeros(num_frames, len(centres), dtype=torch.float64)
    for f in range(num_frames):
        if f >= centres[-1]:
            weights[f, -1] = 1.0
            continue
        j = max(i for i, c in enumerate(centres) if c <= f)
        span = centres[j + 1] - centres[j]
        alpha = (f - centres[j]) / span
        weights[f, j] = 1.0 - alpha
        weights[f, j + 1] = alpha
    return weights


def from_grid(grid: torch.Tensor, num_frames: int, temporal: int, spatial: int) -> torch.Tensor:
    """Upsample a token-grid clip back: linear in time, bicubic in space -> [3, T, H, W]."""
    weights = _time_weights(num_frames, temporal).to(grid.device)
    frames = torch.einsum("ft,cthw->fchw", weights, grid.double())
    up = F.interpolate(frames, scale_factor=spatial, mode="bicubic", align_corners=False)
    return up.permute(1, 0, 2, 3)


def same_grid_baseline(video: torch.Tensor, temporal: int, spatial: int) -> torch.Tensor:
    """The baseline reconstruction of a [0, 255] clip: [3, T, H, W] -> [3, T, H, W] (rounded)."""
    _, num_frames, _, _ = video.shape
    grid = to_grid(video, temporal, spatial)
    return from_grid(grid, num_frames, temporal, spatial).clamp(0, PIXEL_MAX).round().float()


class RunningQuality:
    """PSNR and SSIM of a clip that arrives in consecutive pieces of frames (a streamed decode).

    Both are means over every frame (squared errors; SSIM map positions per frame and channel),
    so summing piece by piece gives the values `psnr` and `ssim` give for the whole clip, up to
    float rounding."""

    def __init__(self) -> None:
        self.squared_error, self.values = 0.0, 0
        self.ssim_sum, self.ssim_positions = 0.0, 0

    def add(self, reference: torch.Tensor, test: torch.Tensor) -> None:
        """reference, test: [3, T, H, W] on [0, 255], the next frames of the clip."""
        _check_same_shape(reference, test)
        ref, out = reference.double(), test.double()
        self.squared_error += float(((ref - out) ** 2).sum())
        self.values += reference.numel()
        frames = ssim_map(ref.permute(1, 0, 2, 3), out.permute(1, 0, 2, 3), PIXEL_MAX)
        self.ssim_sum += float(frames.sum())
        self.ssim_positions += frames.numel()

    @property
    def psnr(self) -> float:
        return psnr_of_mse(self.squared_error / max(1, self.values))

    @property
    def ssim(self) -> float:
        return self.ssim_sum / max(1, self.ssim_positions)


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"clips differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


__all__ = [
    "PSNR_CAP",
    "to_pixels",
    "from_uint8_frames",
    "psnr",
    "psnr_of_mse",
    "ssim",
    "RunningQuality",
    "ssim_map",
    "latent_frame_groups",
    "to_grid",
    "from_grid",
    "same_grid_baseline",
]
