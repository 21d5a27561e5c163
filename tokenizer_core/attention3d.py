"""Attention blocks of the Cosmos-style video tokenizer's mid block: spatial attention within each
frame, then causal attention over time at each position. Shapes: x [B, C, T, H, W].

Parameter names follow NVIDIA's Cosmos Tokenizer (`norm`, `q`, `k`, `v`, `proj_out`, each a 1x1x1
CausalConv3d) so that official state dicts load unchanged. In streaming mode (a `_stream` dict,
tokenizer_core/streaming.py) the temporal block keeps every past frame's normalised input, so a
chunk attends to all earlier frames as one full pass does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer_core.layers3d import CausalConv3d, CausalNormalize


class _AttnProjections(nn.Module):
    def __init__(self, channels: int, num_groups: int) -> None:
        super().__init__()
        self.norm = CausalNormalize(channels, num_groups=num_groups)
        self.q = CausalConv3d(channels, channels, kernel_size=1, padding=0)
        self.k = CausalConv3d(channels, channels, kernel_size=1, padding=0)
        self.v = CausalConv3d(channels, channels, kernel_size=1, padding=0)
        self.proj_out = CausalConv3d(channels, channels, kernel_size=1, padding=0)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.norm(x)
        return self.q(h), self.k(h), self.v(h)


class CausalAttnBlock(_AttnProjections):
    """Single-head spatial self-attention within each frame over its h*w positions (scale C^-0.5).

    Uses scaled_dot_product_attention (flash / memory-efficient kernels on GPU) instead of
    materialising the (h*w)^2 matrix as the official code does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        q, k, v = self.qkv(x)
        # [B, C, T, H, W] -> [(B T), 1, (H W), C]
        q, k, v = (y.permute(0, 2, 3, 4, 1).reshape(b * t, 1, h * w, c) for y in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return self.proj_out(out).add_(x)


class CausalTemporalAttnBlock(_AttnProjections):
    """Single-head causal attention over time at each spatial position (lower-triangular mask).

    Streaming keeps every past frame's normalised input h (at the bottleneck resolution), so a
    chunk attends to every earlier frame as in one full pass, with half the memory of a key/value
    cache: with k = Wk h + bk and v = Wv h + bv, a query's scores q.k_j = (Wk^T q).h_j + q.bk (the
    last term is the same for every key, so softmax drops it) and its output
    sum_j p_j v_j = Wv (sum_j p_j h_j) + bv (the weights sum to one). Same values as the full
    pass up to float rounding.
    """

    _stream: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if self._stream is not None:
            out = self._attend_streaming(self.norm(x))
        else:
            q, k, v = (_per_position(y) for y in self.qkv(x))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = out.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        return self.proj_out(out).add_(x)

    def _attend_streaming(self, h: torch.Tensor) -> torch.Tensor:
        """Causal attention of this chunk over all earlier chunks' frames plus its own.

        h: the chunk's normalised input [B, C, t, H, W] -> [(B H W), 1, t, C]. Past frames stay a
        list of per-chunk blocks (no growing concatenation, whose copy would double the cache
        transiently). Sequences are short (latent frames), so the scores [(B H W), 1, t, T] are small.
        """
        state = self._stream
        assert state is not None
        blocks: list[torch.Tensor] = state.setdefault("h", [])
        blocks.append(_per_position(h))
        q = _per_position(self.q(h))
        t, past = q.shape[2], sum(b.shape[2] for b in blocks) - q.shape[2]
        wk, wv = (conv.conv3d.weight.flatten(1) for conv in (self.k, self.v))  # [C_out, C_in]
        q_in = (q @ wk) * q.shape[-1] ** -0.5  # scores against h, not k
        scores = torch.cat([q_in @ hb.transpose(-1, -2) for hb in blocks], dim=-1)  # [N, 1, t, T]
        # query i sits at absolute time past + i and may see frames 0 .. past + i
        allowed = torch.arange(past + t, device=q.device)[None, :] <= (past + torch.arange(t, device=q.device))[:, None]
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        mixed = torch.zeros_like(q)
        start = 0
        for hb in blocks:
            mixed += probs[..., start: start + hb.shape[2]] @ hb
            start += hb.shape[2]
        out = mixed @ wv.transpose(0, 1)
        bias = self.v.conv3d.bias
        return out if bias is None else out.add_(bias)


def _per_position(y: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [(B H W), 1, T, C]: one sequence over time per spatial position."""
    b, c, t, h, w = y.shape
    return y.permute(0, 3, 4, 2, 1).reshape(b * h * w, 1, t, c)


def mid_attention(channels: int) -> nn.Sequential:
    """The mid-block attention pair: spatial (.0) then causal temporal (.1)."""
    return nn.Sequential(CausalAttnBlock(channels, num_groups=1), CausalTemporalAttnBlock(channels, num_groups=1))
