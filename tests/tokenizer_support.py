"""Helpers shared by the tokenizer tests."""

from __future__ import annotations

import torch

import tokenizer_core as tc


def spread_tokenizer(name: str) -> tc.CosmosTokenizer:
    """A seeded random tokenizer whose discrete ids vary: at default init the pre-quantisation
    values are tiny and FSQ maps them all to one id, so quant_conv is scaled up."""
    tok = tc.from_pretrained(name, init="random")
    if tok.config.discrete:
        with torch.no_grad():
            for p in tok.quant_conv.parameters():
                p.mul_(200.0)
    return tok
