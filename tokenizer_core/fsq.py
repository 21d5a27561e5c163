"""Finite Scalar Quantization (Mentzer et al. 2023, arXiv:2309.15505) as used by Cosmos DV/DI.

Shapes: z [B, D, ...] with D = len(levels) -> ids [B, ...] (int64) and codes [B, D, ...] in [-1, 1].
Each dimension is bounded with tanh to (levels-1)/2 (shifted by 1/2 for even levels) and rounded;
id = sum_i digit_i * basis_i with digit_i in [0, levels_i) and basis = cumprod([1, l0, l1, ...]).

Quantisation runs in fp32 whatever the model dtype, and ids are built from integer digits with
integer arithmetic, so an id never passes through a float dtype (bf16 holds only 8 bits of
mantissa: casting ids through it destroys most of the 64,000 vocabulary).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FSQuantizer(nn.Module):
    _levels: torch.Tensor
    _basis: torch.Tensor
    implicit_codebook: torch.Tensor

    def __init__(self, levels: list[int], eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.codebook_dim = len(levels)
        self.codebook_size = math.prod(levels)
        # Buffer names match the official FSQuantizer (all non-persistent there as here).
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int32), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.int64), dim=0)
        self.register_buffer("_basis", basis.to(torch.int32), persistent=False)
        levels_t = torch.tensor(levels)
        half = (levels_t // 2).float()
        digits = self._ids_to_digits(torch.arange(self.codebook_size), levels_t, basis)
        self.register_buffer("implicit_codebook", (digits.float() - half) / half, persistent=False)

    @staticmethod
    def _ids_to_digits(ids: torch.Tensor, levels: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        return (ids.long().unsqueeze(-1) // basis.long()) % levels.long()

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., D] (fp32) -> values in (-(l-1)/2 - offset, (l-1)/2 - offset)."""
        levels = self._levels.float()
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, D, ...] -> (codes [B, D, ...] fp32 in [-1, 1] with straight-through gradient,
        ids [B, ...] int64)."""
        zf = z.float().movedim(1, -1)
        bounded = self.bound(zf)
        rounded = bounded.round()
        half = (self._levels // 2).float()
        codes = (bounded + (rounded - bounded).detach()) / half
        digits = rounded.detach().to(torch.int64) + (self._levels // 2).long()
        ids = (digits * self._basis.long()).sum(dim=-1)
        return codes.movedim(-1, 1), ids

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The official quantizer contract (what encoder.jit returns): z -> (ids, codes in z's dtype,
        a zero loss [B, 1, 1, 1, ...])."""
        codes, ids = self.quantize(z)
        loss = torch.zeros_like(codes[:, :1]).mean(dim=tuple(range(2, codes.ndim)), keepdim=True)
        return ids, codes.to(z.dtype), loss

    def indices_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, ...] integer -> codes [B, D, ...] fp32 (exact inverse of `quantize`'s ids)."""
        digits = self._ids_to_digits(ids, self._levels, self._basis)
        half = (self._levels // 2).float()
        return ((digits.float() - half) / half).movedim(-1, 1)
