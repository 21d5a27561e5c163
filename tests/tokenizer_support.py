"""Helpers shared by the tokenizer tests."""

from __future__ import annotations

from pathlib import Path

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


def official_files(name: str, folder: Path, scale: float = 1.0) -> dict[str, bytes]:
    """`spread_tokenizer(name)` traced into official-format files (encoder.jit, decoder.jit,
    autoencoder.jit, config.json) in `folder`; returns name -> bytes, as a Hub repo holds them.
    Another `scale` of quant_conv gives other weights."""
    from tokenizer_core.official import export_official_jit

    tok = spread_tokenizer(name)
    with torch.no_grad():
        for p in tok.quant_conv.parameters():
            p.mul_(scale)
    t = 1 + tok.config.temporal_compression
    export_official_jit(tok, folder, torch.zeros(1, 3, t, 32, 32))
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
