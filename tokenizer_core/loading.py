"""`from_pretrained`: one entry point for presets, bundled models, tokenmill and official checkpoints.

Resolution order for `path_or_name`:
1. an existing file: a tokenmill checkpoint (.pt / .pth / .safetensors);
2. an existing folder: `model.pt` inside (tokenmill), else official `encoder.jit` / `decoder.jit` /
   `autoencoder.jit` (their weights are mapped into the native module; loading a .jit file runs
   TorchScript code from that file, so only load files you trust);
3. a Hugging Face Hub repo id, `owner/name[@revision]` or `hf://owner/name[@revision]`
   (schemas/hubref.py has the syntax): its official files, fetched into the client's cache
   (tokenizer_core/hub.py);
4. a bundled model name: `tokenizer_core/bundled/<name>/model.pt`;
5. a preset name: random weights only with init="random" (seeded by the name: deterministic).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch

from schemas.hubref import hub_ref_for
from tokenizer_core.checkpoint import load_checkpoint, load_state_strict, seeded_init
from tokenizer_core.config import TokenizerConfig, list_presets, preset_config
from tokenizer_core.model import CosmosTokenizer

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
OFFICIAL_FILES = ("encoder.jit", "decoder.jit", "autoencoder.jit")


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of float32, bfloat16, float16")
    return _DTYPES[dtype]


def bundled_dir() -> Path:
    """Where trained models shipped with tokenmill live (tokenizer_core/bundled/<name>/model.pt)."""
    return Path(__file__).resolve().parent / "bundled"


def build(config: TokenizerConfig) -> CosmosTokenizer:
    """A module for any `config`, with random weights seeded by `config.name` (deterministic)."""
    return seeded_init(lambda: CosmosTokenizer(config), config.name)  # type: ignore[return-value]


def _from_tokenmill(path: Path) -> CosmosTokenizer:
    config, state, _extra = load_checkpoint(path)
    tok = CosmosTokenizer(config)
    load_state_strict(tok, state, str(path))
    return tok


def _load_official(folder: Path, name_hint: str | None, backend: str) -> Any:
    from tokenizer_core import official

    if backend == "jit":
        return official.JitTokenizer.load(folder, name_hint)
    return official.load_official(folder, name_hint)


def _check_matches(tok: Any, name: str) -> None:
    try:
        expected = preset_config(name)
    except KeyError:
        return
    got = tok.config
    if (got.family, got.spatial_compression, got.temporal_compression) != (
            expected.family, expected.spatial_compression, expected.temporal_compression):
        raise ValueError(f"checkpoint holds a {got.family}{got.temporal_compression}x{got.spatial_compression} "
                         f"tokenizer ({got.name}), not {name}")


def _resolve(path_or_name: str, init: str, backend: str, name_hint: str | None = None) -> Any:
    path = Path(path_or_name).expanduser()
    if path.is_file():
        if path.suffix == ".jit":
            raise ValueError(f"{path}: pass the folder holding encoder.jit/decoder.jit, not one .jit file")
        return _from_tokenmill(path)
    if path.is_dir():
        if (path / "model.pt").is_file():
            return _from_tokenmill(path / "model.pt")
        if any((path / f).is_file() for f in OFFICIAL_FILES):
            return _load_official(path, name_hint, backend)
        raise FileNotFoundError(f"{path}: folder has neither model.pt nor official {', '.join(OFFICIAL_FILES)}")
    ref = hub_ref_for(path_or_name)
    if ref is not None:
        from tokenizer_core import hub

        snap = hub.fetch(ref)
        return _load_official(snap.folder, name_hint or snap.hint, backend)
    bundled = bundled_dir() / path_or_name / "model.pt"
    if bundled.is_file():
        return _from_tokenmill(bundled)
    if path_or_name in list_presets():
        if init != "random":
            raise ValueError(
                f"preset {path_or_name!r} is an architecture without weights: give a checkpoint (a folder of "
                f"official encoder.jit/decoder.jit, or a tokenmill .pt) or ask for init='random' explicitly")
        return build(preset_config(path_or_name))
    raise FileNotFoundError(_unknown_name_message(str(path_or_name)))


def list_bundled() -> list[str]:
    """Names of the trained models shipped in tokenizer_core/bundled/."""
    return sorted(p.parent.name for p in bundled_dir().glob("*/model.pt"))


def _unknown_name_message(name: str) -> str:
    import difflib

    known = list_bundled() + list_presets()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (f"tokenizer {name!r} is not a file, a folder, a Hub repo id (owner/name[@revision]), a bundled "
            f"model ({', '.join(list_bundled()) or 'none'}) or a preset ({', '.join(list_presets())}).{hint}")


def from_pretrained(path_or_name: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | str = torch.float32, backend: Literal["native", "jit"] = "native",
                    init: Literal["pretrained", "random"] = "pretrained",
                    checkpoint: str | Path | None = None) -> Any:
    """Load a tokenizer (see module docstring). Returns a `CosmosTokenizer` in eval mode
    (or, with backend="jit", a `JitTokenizer` running the official TorchScript files).

    `checkpoint`, if given, is loaded instead of `path_or_name`, which must then name a preset
    whose family and compression the checkpoint matches (the job spec's tokenizer.name/checkpoint).
    """
    if init not in ("pretrained", "random"):
        raise ValueError(f"init must be 'pretrained' or 'random', got {init!r}")
    if backend not in ("native", "jit"):
        raise ValueError(f"backend must be 'native' or 'jit', got {backend!r}")
    if checkpoint is not None:
        tok = _resolve(str(checkpoint), "pretrained", backend, name_hint=str(path_or_name))
        _check_matches(tok, str(path_or_name))
    else:
        tok = _resolve(str(path_or_name), init, backend)
    if backend == "jit" and isinstance(tok, CosmosTokenizer):
        raise ValueError("backend='jit' needs a folder of official encoder.jit/decoder.jit files")
    return tok.to(device=torch.device(device), dtype=resolve_dtype(dtype)).eval()
