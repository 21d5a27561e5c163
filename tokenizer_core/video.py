"""Factorized causal video encoder and decoder (the architecture of the Cosmos CV/DV tokenizers).

Encoder: video [B, 3, T, H, W] -> Haar patcher [B, 3p^3, 1+(T-1)/p, H/p, W/p] -> conv_in ->
levels of residual blocks with hybrid down-samplers between them -> mid (res, spatial + causal
temporal attention, res) -> norm, SiLU, conv_out -> z [B, z_channels, T', H', W'].
Decoder: the mirror image, ending in the inverse patcher.
Level i down-samples in space while i < log2(s) - log2(p) and in time while i < log2(t) - log2(p).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer_core.attention3d import mid_attention
from tokenizer_core.config import TokenizerConfig
from tokenizer_core.layers3d import (
    CausalHybridDownsample3d,
    CausalHybridUpsample3d,
    CausalNormalize,
    CausalResnetBlockFactorized3d,
    cat_time,
    factorized_conv,
)
from tokenizer_core.patching import Patcher3D, UnPatcher3D
from tokenizer_core.streaming import stream_state


def _num_ups(factor: int, patch: int) -> int:
    return int(math.log2(factor)) - int(math.log2(patch))


class Mid(nn.Module):
    """block_1 -> attn_1 (spatial, then causal temporal attention) -> block_2."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = CausalResnetBlockFactorized3d(channels, channels, dropout)
        self.attn_1 = mid_attention(channels)
        self.block_2 = CausalResnetBlockFactorized3d(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))

    def stages(self) -> list[nn.Module]:
        return [self.block_1, *self.attn_1, self.block_2]


class Level(nn.Module):
    """One resolution level: residual blocks (+ attention where the resolution asks for it)."""

    downsample: nn.Module
    upsample: nn.Module

    def __init__(self, cfg: TokenizerConfig, block_in: int, block_out: int, n_blocks: int, res: int) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            CausalResnetBlockFactorized3d(block_in if j == 0 else block_out, block_out, cfg.dropout)
            for j in range(n_blocks)
        )
        # attn_resolutions=[32] never matches the running resolution of the released configs; the
        # official rule is kept so that a config asking for level attention gets it where they would.
        self.attn = nn.ModuleList(mid_attention(block_out) for _ in range(n_blocks) if res in cfg.attn_resolutions)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for stage in self.stages():
            h = stage(h)
        return h

    def stages(self) -> list[nn.Module]:
        """The modules of the level in call order. Callers that loop over them in their own frame
        release each intermediate as soon as the next exists (a call to the level would keep its
        input alive until the level ends)."""
        out: list[nn.Module] = []
        for j, block in enumerate(self.block):
            out += [block, self.attn[j]] if len(self.attn) > 0 else [block]
        return out


class EncoderFactorized(nn.Module):
    chunk_from_frames = 9  # see _time_chunk

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch, mult, p = cfg.channels, cfg.channels_mult, cfg.patch_size
        self.num_resolutions, self.num_res_blocks = len(mult), cfg.num_res_blocks
        self.num_spatial_downs = _num_ups(cfg.spatial_compression, p)
        self.num_temporal_downs = _num_ups(cfg.temporal_compression, p)
        if max(self.num_spatial_downs, self.num_temporal_downs) > self.num_resolutions - 1:
            raise ValueError(f"tokenizer config {cfg.name!r}: {len(mult)} levels cannot down-sample "
                             f"{self.num_spatial_downs} times in space / {self.num_temporal_downs} in time")
        self.patcher3d = Patcher3D(p, cfg.patch_method)
        self.conv_in = factorized_conv(3 * p ** 3, ch)
        res = cfg.resolution // p
        in_mult = (1, *mult)
        self.down = nn.ModuleList()
        for i in range(self.num_resolutions):
            block_out = ch * mult[i]
            level = Level(cfg, ch * in_mult[i], block_out, cfg.num_res_blocks, res)
            if i != self.num_resolutions - 1:
                level.downsample = CausalHybridDownsample3d(
                    block_out, spatial_down=i < self.num_spatial_downs, temporal_down=i < self.num_temporal_downs,
                    pruned=cfg.sampler_convs == "pruned")
                res //= 2
            self.down.append(level)
        block_in = ch * mult[-1]
        self.mid = Mid(block_in, cfg.dropout)
        self.norm_out = CausalNormalize(block_in, num_groups=1)
        self.conv_out = factorized_conv(block_in, cfg.z_factor * cfg.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, T, H, W] -> z: [B, z, 1 + (T-1)/t, H/s, W/s]."""
        step = self._time_chunk(x)
        h = self._full_resolution(x) if step is None else self._full_resolution_chunked(x, step)
        for i in range(1, self.num_resolutions):
            level = cast(Level, self.down[i])
            for stage in level.stages():
                h = stage(h)
            if i != self.num_resolutions - 1:
                h = level.downsample(h)
        for stage in cast(Mid, self.mid).stages():
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _full_resolution(self, x: torch.Tensor) -> torch.Tensor:
        """Patcher, conv_in, level 0 and its down-sampler."""
        h = self.patcher3d(x)
        for conv in self.conv_in:
            h = conv(h)
        level = cast(Level, self.down[0])
        for stage in level.stages():
            h = stage(h)
        return level.downsample(h) if self.num_resolutions > 1 else h

    def _time_chunk(self, x: torch.Tensor) -> int | None:
        """Video frames per chunk of the full-resolution part (after frame 0), or None for one pass.

        Chunks carry causal state like a stream: each temporal conv keeps its last kt-1 = 2 input
        frames, which outweighs the saving on short clips (measured, CV8x8x8 at 256^2: 17 frames
        52 -> 72 MiB peak, 33 frames 89 -> 74 MiB, 65 frames 158 -> 108 MiB); hence a minimum of
        `chunk_from_frames` full-resolution frames. Inference on CPU only, not inside a stream."""
        if (torch.is_grad_enabled() or torch.jit.is_tracing() or x.device.type != "cpu"
                or self.patcher3d._stream is not None or self.num_resolutions == 1):
            return None
        p = self.patcher3d.patch_size
        step = p * (2 if cast(Level, self.down[0]).downsample.temporal_down else 1)
        return step if 1 + (x.shape[2] - 1) // p >= self.chunk_from_frames else None

    def _full_resolution_chunked(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """`_full_resolution` over frame 0, then `step` frames at a time, with carried causal state:
        the same result with one chunk's full-resolution activations alive."""
        bounds = [0, *range(1, x.shape[2] + 1, step)]
        with stream_state(self.patcher3d, self.conv_in, self.down[0]):
            parts = [self._full_resolution(x[:, :, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return cat_time(parts)


class DecoderFactorized(nn.Module):
    chunk_from_frames = 13  # see _chunked

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch, mult, p = cfg.channels, cfg.dec_channels_mult, cfg.patch_size
        self.num_resolutions = len(mult)
        self.num_spatial_ups = _num_ups(cfg.spatial_compression, p)
        self.num_temporal_ups = _num_ups(cfg.temporal_compression, p)
        block_in = ch * mult[-1]
        res = (cfg.resolution // p) // 2 ** (self.num_resolutions - 1)
        self.unpatcher3d = UnPatcher3D(p, cfg.patch_method)
        self.conv_in = factorized_conv(cfg.z_channels, block_in)
        self.mid = Mid(block_in, cfg.dropout)
        levels: list[Level] = []
        for i in reversed(range(self.num_resolutions)):
            block_out = ch * mult[i]
            level = Level(cfg, block_in, block_out, cfg.num_res_blocks + 1, res)
            block_in = block_out
            if i != 0:
                spatial_up, temporal_up = self._up_flags(cfg, self.num_resolutions - i - 1)
                level.upsample = CausalHybridUpsample3d(block_in, spatial_up, temporal_up,
                                                        pruned=cfg.sampler_convs == "pruned")
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = CausalNormalize(block_in, num_groups=1)
        self.conv_out = factorized_conv(block_in, 3 * p ** 3)

    def _up_flags(self, cfg: TokenizerConfig, i_rev: int) -> tuple[bool, bool]:
        # The official rule (DecoderFactorized): non-legacy models up-sample in time one level
        # later than the encoder's mirror; space follows time, plus extra levels if s > t.
        if cfg.legacy_mode:
            temporal_up = i_rev < self.num_temporal_ups
        else:
            temporal_up = 0 < i_rev < self.num_temporal_ups + 1
        spatial_up = temporal_up or (i_rev < self.num_spatial_ups and self.num_spatial_ups > self.num_temporal_ups)
        return spatial_up, temporal_up

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, z, T', H', W'] -> video [B, 3, 1 + (T'-1)*t, H'*s, W'*s]."""
        h = self.conv_in(z)
        for stage in cast(Mid, self.mid).stages():
            h = stage(h)
        for i in reversed(range(1, self.num_resolutions)):
            level = cast(Level, self.up[i])
            for stage in level.stages():
                h = stage(h)
            if i > 1:
                h = level.upsample(h)
        return self._full_resolution_chunked(h) if self._chunked(h) else self._full_resolution(h)

    def _full_resolution(self, h: torch.Tensor) -> torch.Tensor:
        """Level 1's up-sampler, level 0, norm_out, conv_out and the unpatcher."""
        if self.num_resolutions > 1:
            h = cast(Level, self.up[1]).upsample(h)
        for stage in cast(Level, self.up[0]).stages():
            h = stage(h)
        h = F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled())
        for conv in self.conv_out:
            h = conv(h)
        return self.unpatcher3d(h)

    def _frames_per_input_frame(self) -> int:
        """Output video frames per frame entering `_full_resolution` (after its frame 0, which gives one)."""
        temporal_up = self.num_resolutions > 1 and cast(Level, self.up[1]).upsample.temporal_up
        return self.unpatcher3d.patch_size * (2 if temporal_up else 1)

    def _chunked(self, h: torch.Tensor) -> bool:
        """Whether `_full_resolution` runs one input frame at a time. As in the encoder, the frames
        each temporal conv carries outweigh the saving on short clips (measured, CV8x8x8 at 256^2:
        33 frames 125 -> 132 MiB peak, 49 frames 174 -> 144, 65 frames 223 -> 163), hence a
        minimum of `chunk_from_frames` full-resolution frames. Inference on CPU only, not inside a stream."""
        if (torch.is_grad_enabled() or torch.jit.is_tracing() or h.device.type != "cpu"
                or self.unpatcher3d._stream is not None or self.num_resolutions == 1):
            return False
        frames = 1 + (h.shape[2] - 1) * self._frames_per_input_frame() // self.unpatcher3d.patch_size
        return frames >= self.chunk_from_frames

    def _full_resolution_chunked(self, h: torch.Tensor) -> torch.Tensor:
        """`_full_resolution` one frame of h at a time with carried causal state, written into the
        preallocated video: the same result with one chunk's full-resolution activations alive."""
        frames = 1 + (h.shape[2] - 1) * self._frames_per_input_frame()
        out: torch.Tensor | None = None
        start = 0
        with stream_state(cast(Level, self.up[1]).upsample, self.up[0], self.conv_out, self.unpatcher3d):
            for j in range(h.shape[2]):
                # contiguous, so that the channels-last fast paths apply
                part = self._full_resolution(h[:, :, j: j + 1].contiguous(memory_format=torch.channels_last_3d))
                if out is None:
                    out = part.new_empty((part.shape[0], part.shape[1], frames, *part.shape[3:]))
                out[:, :, start: start + part.shape[2]] = part
                start += part.shape[2]
                del part
        assert out is not None and start == frames
        return out
