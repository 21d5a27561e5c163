"""2D encoder and decoder of the Cosmos CI/DI image tokenizers.

Image x: [B, 3, H, W] -> Haar patcher [B, 3p^2, H/p, W/p] -> conv_in -> levels of residual blocks
(GroupNorm with 32 groups, 3x3 convs) with stride-2 down-sampling on the first log2(s/p) levels ->
mid (res, attention, res) -> norm, SiLU, conv_out -> z [B, z, H/s, W/s]. The decoder mirrors it with
nearest x2 + 3x3 conv up-sampling. Names follow `cosmos_tokenizer/modules/layers2d.py`.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer_core.config import TokenizerConfig
from tokenizer_core.patching import Patcher, UnPatcher


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut: nn.Module = (nn.Conv2d(in_channels, out_channels, 1)
                                        if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, scale C^-0.5 (via SDPA)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        # [B, C, H, W] -> [B, 1, (H W), C]
        q, k, v = (m(hn).flatten(2).transpose(1, 2).unsqueeze(1) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


class Mid(nn.Module):
    def __init__(self, channels: int, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, cfg.dropout, cfg.num_groups)
        self.attn_1 = AttnBlock(channels, cfg.num_groups)
        self.block_2 = ResnetBlock(channels, channels, cfg.dropout, cfg.num_groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Level(nn.Module):
    downsample: nn.Module
    upsample: nn.Module

    def __init__(self, cfg: TokenizerConfig, block_in: int, block_out: int, n_blocks: int, res: int) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(block_in if j == 0 else block_out, block_out, cfg.dropout, cfg.num_groups)
            for j in range(n_blocks)
        )
        self.attn = nn.ModuleList(
            AttnBlock(block_out, cfg.num_groups) for _ in range(n_blocks) if res in cfg.attn_resolutions
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[j](h)
        return h


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch, mult, p = cfg.channels, cfg.channels_mult, cfg.patch_size
        self.num_downsamples = int(math.log2(cfg.spatial_compression)) - int(math.log2(p))
        if self.num_downsamples > len(mult):
            raise ValueError(f"tokenizer config {cfg.name!r}: {len(mult)} levels cannot down-sample "
                             f"{self.num_downsamples} times")
        self.patcher = Patcher(p, cfg.patch_method)
        self.conv_in = nn.Conv2d(3 * p * p, ch, 3, padding=1)
        res, in_mult = cfg.resolution // p, (1, *mult)
        self.down = nn.ModuleList()
        for i in range(len(mult)):
            level = Level(cfg, ch * in_mult[i], ch * mult[i], cfg.num_res_blocks, res)
            if i < self.num_downsamples:
                level.downsample = Downsample(ch * mult[i])
                res //= 2
            self.down.append(level)
        block_in = ch * mult[-1]
        self.mid = Mid(block_in, cfg)
        self.norm_out = _norm(block_in, cfg.num_groups)
        self.conv_out = nn.Conv2d(block_in, cfg.z_factor * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] -> z: [B, z, H/s, W/s]."""
        h = self.conv_in(self.patcher(x))
        for i, module in enumerate(self.down):
            level = cast(Level, module)
            h = level(h)
            if i < self.num_downsamples:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch, mult, p = cfg.channels, cfg.dec_channels_mult, cfg.patch_size
        self.num_resolutions = len(mult)
        self.num_upsamples = int(math.log2(cfg.spatial_compression)) - int(math.log2(p))
        block_in = ch * mult[-1]
        res = (cfg.resolution // p) // 2 ** (len(mult) - 1)
        self.unpatcher = UnPatcher(p, cfg.patch_method)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = Mid(block_in, cfg)
        levels: list[Level] = []
        for i in reversed(range(len(mult))):
            level = Level(cfg, block_in, ch * mult[i], cfg.num_res_blocks + 1, res)
            block_in = ch * mult[i]
            if i >= len(mult) - self.num_upsamples:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, cfg.num_groups)
        self.conv_out = nn.Conv2d(block_in, 3 * p * p, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, z, h, w] -> image [B, 3, h*s, w*s]."""
        h = self.mid(self.conv_in(z))
        for i in reversed(range(self.num_resolutions)):
            level = cast(Level, self.up[i])
            h = level(h)
            if i >= self.num_resolutions - self.num_upsamples:
                h = level.upsample(h)
        return self.unpatcher(self.conv_out(F.silu(self.norm_out(h))))
