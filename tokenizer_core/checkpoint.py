"""tokenmill checkpoints, the weights hash, and deterministic random initialisation.

A tokenmill checkpoint is plain data loadable with `torch.load(path, weights_only=True)`:
    {"format": "tokenmill-tokenizer", "version": 1, "config": {...}, "state_dict": {...}, "extra": {...}}
or, for `.safetensors` files, the tensors with the rest as JSON in the file's metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokenizer_core.config import TokenizerConfig

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "tokenmill-tokenizer"
CHECKPOINT_VERSION = 1


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order: stable across loads."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def seeded_init(module_factory: Any, name: str) -> nn.Module:
    """Build a module with weights drawn from a generator seeded by `name` (same name, same weights)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") & ((1 << 63) - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return module_factory()


def _plain(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except TypeError as exc:
        raise TypeError(f"checkpoint {where} must be plain JSON-able data: {exc}") from None


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError(".safetensors checkpoints need the safetensors package (pip install safetensors); "
                          "or use a .pt path") from None
    return safetensors


def save_checkpoint(tok: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Write `tok` (a CosmosTokenizer or any module with a `.config` TokenizerConfig) to `path`.

    `.safetensors` paths need the `safetensors` package; anything else is a torch.save file.
    The file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
    """
    config = getattr(tok, "config", None)
    if not isinstance(config, TokenizerConfig):
        raise TypeError("save_checkpoint needs a tokenizer with a TokenizerConfig `.config`")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in tok.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    payload_extra = _plain(extra or {}, "extra")
    if path.suffix == ".safetensors":
        save_file = _safetensors().torch.save_file
        meta = {"format": CHECKPOINT_FORMAT, "version": str(CHECKPOINT_VERSION),
                "config": json.dumps(config.to_dict()), "extra": json.dumps(payload_extra)}
        save_file(state, str(tmp), metadata=meta)
    else:
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config.to_dict(),
                    "state_dict": state, "extra": payload_extra}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> tuple[TokenizerConfig, dict[str, torch.Tensor], dict]:
    """Read a tokenmill checkpoint (weights_only: no code runs) -> (config, state_dict, extra)."""
    path = Path(path)
    state: Any
    if path.suffix == ".safetensors":
        with _safetensors().safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        payload = {"format": meta.get("format"), "version": int(meta.get("version", 0)),
                   "config": json.loads(meta.get("config", "null")), "extra": json.loads(meta.get("extra", "{}"))}
    else:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a tokenmill tokenizer checkpoint (missing format={CHECKPOINT_FORMAT!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')} is not supported "
                         f"(this tokenmill reads version {CHECKPOINT_VERSION})")
    if not isinstance(state, dict) or not isinstance(payload.get("config"), dict):
        raise ValueError(f"{path}: checkpoint lacks a config or state_dict")
    return TokenizerConfig.from_dict(payload["config"]), state, payload.get("extra") or {}


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict) with an error that names missing/unexpected/mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:4]}")
        target = getattr(getattr(module, "config", None), "name", type(module).__name__)
        raise ValueError(f"{source}: weights do not fit {target}: "
                         + "; ".join(parts))
    # Checkpoints may hold fp16/bf16 weights: load_state_dict copies them into the module's dtype.
    module.load_state_dict(state, strict=True)
