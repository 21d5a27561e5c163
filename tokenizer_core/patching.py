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


def _write_in_place(x: torch.Tensor) -> bool:
    """Whether results may be written into preallocated tensors: not under autograd (out= has no
    gradient) and not while tracing (sizes taken as Python ints would freeze the trace to one shape)."""
    return not (torch.jit.is_tracing() or (x.requires_grad and torch.is_grad_enabled()))


def _merge(low: torch.Tensor, high: torch.Tensor, dim: int) -> torch.Tensor:
    """Interleave (low + high, low - high) along `dim`, written straight into the result (no stack copy)."""
    if not _write_in_place(low):
        return torch.stack((low + high, low - high), dim=dim + 1).flatten(dim, dim + 1)
    shape = list(low.shape)
    shape[dim] *= 2
    out = low.new_empty(shape)
    pairs = out.unflatten(dim, (-1, 2))
    torch.add(low, high, out=pairs.select(dim + 1, 0))
    torch.sub(low, high, out=pairs.select(dim + 1, 1))
    return out


def haar_forward(x: torch.Tensor, dims: tuple[int, ...], out: torch.Tensor | None = None) -> torch.Tensor:
    """One Haar level over `dims` (each of even length); sub-bands stacked band-major on dim 1.

    The last split writes into `out` (allocated if None; any memory layout, e.g. channels-last),
    so no concatenated copy is made. Scaling by 2^-len(dims) is exact (a power of two).
    """
    in_place = _write_in_place(x)
    bands = [x]
    for dim in dims[:-1] if in_place else dims:
        bands = [b for band in bands for b in _split(band, dim)]
    if not in_place:
        return torch.cat(bands, dim=1) / (2 ** len(dims))
    c, last = x.shape[1], dims[-1]
    if out is None:
        shape = list(bands[0].shape)
        shape[1], shape[last] = c * 2 * len(bands), shape[last] // 2
        out = x.new_empty(shape)
    for i, band in enumerate(bands):
        pairs = band.unflatten(last, (-1, 2))
        even, odd = pairs.select(last + 1, 0), pairs.select(last + 1, 1)
        torch.add(even, odd, out=out[:, 2 * i * c: (2 * i + 1) * c])
        torch.sub(even, odd, out=out[:, (2 * i + 1) * c: (2 * i + 2) * c])
    return out.mul_(2.0 ** -len(dims))


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
        """Any input layout; the result is channels-last (the layout the encoder's convs run in)."""
        first = self._stream is None or not self._stream.get("started")
        if self._stream is not None:
            self._stream["started"] = True
        if self.patch_method == "haar" and _write_in_place(x):
            return self._haar_by_group(x, first)
        if first:
            x = torch.cat([x[:, :, :1].repeat_interleave(self.patch_size, dim=2), x[:, :, 1:]], dim=2)
        if self.patch_method == "rearrange":
            p = self.patch_size
            x = rearrange(x, "b c (t p1) (h p2) (w p3) -> b (c p1 p2 p3) t h w", p1=p, p2=p, p3=p)
        else:
            for _ in range(self.levels):
                x = haar_forward(x, (2, 3, 4))
        return x.contiguous(memory_format=torch.channels_last_3d)

    def _haar_by_group(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        """Each output frame from its own p input frames (the transform mixes nothing across
        groups), written into the channels-last result: the repeated first frame and the
        intermediate levels exist for one group at a time, not for the whole clip."""
        p = self.patch_size
        groups = [x[:, :, :1].expand(-1, -1, p, -1, -1)] if first else []
        groups += [x[:, :, s: s + p] for s in range(1 if first else 0, x.shape[2], p)]
        b, c, _, h, w = x.shape
        out = torch.empty((b, c * p ** 3, len(groups), h // p, w // p), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last_3d)
        for j, group in enumerate(groups):
            for level in range(self.levels):
                group = haar_forward(group, (2, 3, 4), out[:, :, j: j + 1] if level == self.levels - 1 else None)
        return out


class UnPatcher3D(_PatchBase):
    """Inverse of `Patcher3D`: drops the p-1 extra leading frames (first call only when streaming)."""

    _stream: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self._stream is None or not self._stream.get("started")
        if self._stream is not None:
            self._stream["started"] = True
        if self.patch_method == "haar" and _write_in_place(x):
            return self._haar_by_frame(x, first)
        if self.patch_method == "rearrange":
            p = self.patch_size
            x = rearrange(x, "b (c p1 p2 p3) t h w -> b c (t p1) (h p2) (w p3)", p1=p, p2=p, p3=p)
        else:
            for _ in range(self.levels):
                x = haar_inverse(x, (2, 3, 4))
        return x[:, :, self.patch_size - 1:] if first else x

    def _haar_by_frame(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        """One input frame (p output frames) at a time, written into a contiguous result."""
        p = self.patch_size
        b, c, t, h, w = x.shape
        drop = p - 1 if first else 0
        out = torch.empty((b, c // p ** 3, t * p - drop, h * p, w * p), dtype=x.dtype, device=x.device)
        for j in range(t):
            y = x[:, :, j: j + 1]
            for _ in range(self.levels):
                y = haar_inverse(y, (2, 3, 4))
            skip = drop if j == 0 else 0
            start = j * p - drop + skip
            out[:, :, start: start + p - skip] = y[:, :, skip:]
        return out
