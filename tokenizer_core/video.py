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

from tokenizer_core.config import TokenizerConfig
from tokenizer_core.layers3d import (
    CausalHybridDownsample3d,
    CausalHybridUpsample3d,
    CausalNormalize,
    CausalResnetBlockFactorized3d,
    factorized_conv,
    mid_attention,
)
from tokenizer_core.patching import Patcher3D, UnPatcher3D


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
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[j](h)
        return h


class EncoderFactorized(nn.Module):
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
        h = self.conv_in(self.patcher3d(x))
        for i, module in enumerate(self.down):
            level = cast(Level, module)
            h = level(h)
            if i != self.num_resolutions - 1:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class DecoderFactorized(nn.Module):
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
        h = self.mid(self.conv_in(z))
        for i in reversed(range(self.num_resolutions)):
            level = cast(Level, self.up[i])
            h = level(h)
            if i != 0:
                h = level.upsample(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return self.unpatcher3d(h)
