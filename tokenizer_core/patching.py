"""Haar wavelet patching (and plain rearrange patching) for images and videos.

Shapes: image x: [B, C, H, W] -> [B, C*4^L, H/2^L, W/2^L];
        video x: [B, C, T, H, W] -> [B, C*8^L, T'/2^L, H/2^L, W/2^L], L = log2(patch_size), where the
        first frame is repeated `patch_size` times first (T' = T + patch_size - 1), so that a clip of
        1 + k*p frames becomes 1 + k latent frames and a single image is a one-frame video.

One Haar level splits every axis into (a+b, a-b) pairs and orders the sub-bands low-before-high,
time-major for video (lll, llh, lhl, lhh, hll, ...: t, h, w), width-major for images (w, h),
band-major in the channel dimension, which is the layout
of NVIDIA's Cosmos Tokenizer `Patcher3D` (there with stride-2 convolutions by [1, 1]/sqrt(2) and
[1, -1]/sqrt(2), rescaled by 1/(2*sqrt(2)) per 3D level); here it is done with reshapes. Overall
factor per level: 1/4 in 2D, 1/8 in 3D. The inverse is exact.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

_WAVELETS = {"haar": [1 / math.sqrt(2), 1 / math.sqrt(2)], "rearrange": [1.0, 1.0]}


def _split(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = x.unflatten(dim, (-1, 2))
    even, odd = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    return even + odd, even - odd


def _merge(low: torch.Tensor, high: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.stack((low + high, low - high), dim=dim + 1).flatten(dim, dim + 1)


def haar_forward(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """One Haar level over `dims` (each of even length); sub-bands stacked band-major on dim 1."""
    bands = [x]
    for dim in dims:
        bands = [b for band in bands for b in _split(band, dim)]
    return torch.cat(bands, dim=1) / (2 ** len(dims))


def haar_inverse(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `haar_forward` (the 1/2 per axis of the forward scale cancels the merge's 2)."""
    bands = list(x.chunk(2 ** len(dims), dim=1))
    for dim in reversed(dims):
        bands = [_merge(bands[i], bands[i + 1], dim) for i in range(0, len(bands), 2)]
    return bands[0]


class _PatchBase(nn.Module):
    """Holds the official (non-persistent) buffers so official JIT buffer names map one to one."""

    def __init__(self, patch_size: int, patch_method: str) -> None:
        super().__init__()
        if patch_method not in _WAVELETS:
            raise ValueError(f"unknown patch_method {patch_method!r}; expected 'haar' or 'rearrange'")
        self.patch_size = patch_size
        self.patch_method = patch_method
        self.levels = int(math.log2(patch_size))
        self.register_buffer("wavelets", torch.tensor(_WAVELETS[patch_method]), persistent=False)
        self.register_buffer("_arange", torch.arange(2), persistent=False)


class Patcher(_PatchBase):
    """Image patcher: x [B, C, H, W] -> [B, C*p*p, H/p, W/p]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch_method == "rearrange":
            p = self.patch_size
            return rearrange(x, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=p, p2=p).contiguous()
        for _ in range(self.levels):
            x = haar_forward(x, (3, 2))  # the official 2D transform splits W first: bands are W-major
        return x


class UnPatcher(_PatchBase):
    """Inverse of `Patcher`: x [B, C*p*p, h, w] -> [B, C, h*p, w*p]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch_method == "rearrange":
            p = self.patch_size
            return rearrange(x, "b (c p1 p2) h w -> b c (h p1) (w p2)", p1=p, p2=p)
        for _ in range(self.levels):
            x = haar_inverse(x, (3, 2))
        return x


class Patcher3D(_PatchBase):
    """Video patcher: x [B, C, T, H, W] -> [B, C*p^3, (T+p-1)/p, H/p, W/p].

    In streaming mode (`_stream` is a dict) only the first call repeats the first frame; later
    chunks must hold a multiple of `patch_size` frames.
    """

    _stream: dict | None = None

    def __init__(self, patch_size: int, patch_method: str) -> None:
        super().__init__(patch_size, patch_method)
        self.register_buffer("patch_size_buffer", torch.full((1,), patch_size, dtype=torch.int32),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self._stream is None or not self._stream.get("started")
        if self._stream is not None:
            self._stream["started"] = True
        if first:
            x = torch.cat([x[:, :, :1].repeat_interleave(self.patch_size, dim=2), x[:, :, 1:]], dim=2)
        if self.patch_method == "rearrange":
            p = self.patch_size
            return rearrange(x, "b c (t p1) (h p2) (w p3) -> b (c p1 p2 p3) t h w", p1=p, p2=p, p3=p).contiguous()
        for _ in range(self.levels):
            x = haar_forward(x, (2, 3, 4))
        return x


class UnPatcher3D(_PatchBase):
    """Inverse of `Patcher3D`: drops the p-1 extra leading frames (first call only when streaming)."""

    _stream: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch_method == "rearrange":
            p = self.patch_size
            x = rearrange(x, "b (c p1 p2 p3) t h w -> b c (t p1) (h p2) (w p3)", p1=p, p2=p, p3=p)
        else:
            for _ in range(self.levels):
                x = haar_inverse(x, (2, 3, 4))
        first = self._stream is None or not self._stream.get("started")
        if self._stream is not None:
            self._stream["started"] = True
        return x[:, :, self.patch_size - 1:] if first else x
