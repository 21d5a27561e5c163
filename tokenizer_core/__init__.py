"""tokenizer_core: a native PyTorch Cosmos-style causal video tokenizer.

    tok = tokenizer_core.from_pretrained("DV4x8x8-tiny", init="random")
    ids = tok.encode(video)        # video [B, 3, 1+k*t, H, W] in [-1, 1] -> int64 [B, 1+k, H/s, W/s]
    rec = tok.decode(ids)          # -> [B, 3, 1+k*t, H, W]

Imports neither Ray nor webdataset. See docs/tokenizer.md.
"""

from __future__ import annotations

from tokenizer_core.checkpoint import load_checkpoint, save_checkpoint, state_dict_hash
from tokenizer_core.config import TokenizerConfig, list_presets, preset_config
from tokenizer_core.loading import bundled_dir, from_pretrained, resolve_dtype
from tokenizer_core.model import CosmosTokenizer, TokenizerOutput

__all__ = [
    "CosmosTokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "bundled_dir",
    "from_pretrained",
    "list_presets",
    "load_checkpoint",
    "preset_config",
    "resolve_dtype",
    "save_checkpoint",
    "state_dict_hash",
]
