"""Official Cosmos Tokenizer files: encoder.jit / decoder.jit / autoencoder.jit.

The official release traces (torch.jit.trace) encoder = Sequential(encoder, quant_conv, quantizer |
distribution) and decoder = Sequential([inv_quant,] post_quant_conv, decoder), plus the whole
autoencoder. Their state dicts use the names of our native module, with the decoder's quantizer
under `inv_quant.quantizer.*`, plus non-persistent buffers (Haar filters, FSQ tables) that we
rebuild and only compare. `load_official` maps them into `CosmosTokenizer` with strict checking;
`JitTokenizer` runs the TorchScript files as they are (backend="jit").

`torch.jit.load` runs TorchScript code stored in the file (its `__setstate__` methods, and the
compiled program itself when called), so the native path never calls it: the tensors are read
as data (`tokenizer_core.jit_weights`). backend="jit" does load the files as TorchScript: use it
only for files you trust (docs/threat-model.md).
`export_official_jit` writes the same three files from a native model (tests, benchmarks).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokenizer_core.checkpoint import load_state_strict, state_dict_hash
from tokenizer_core.config import TokenizerConfig
from tokenizer_core.fsq import FSQuantizer
from tokenizer_core.jit_weights import jit_state_dict
from tokenizer_core.model import CosmosTokenizer
from tokenizer_core.variants import infer_config

log = logging.getLogger(__name__)

FILES = ("encoder.jit", "decoder.jit", "autoencoder.jit")
# Buffers the official modules register as non-persistent; TorchScript keeps them in state_dict().
_BUFFER_SUFFIXES = ("wavelets", "_arange", "patch_size_buffer", "_levels", "_basis", "implicit_codebook")


def _jit_load(path: Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    return torch.jit.load(str(path), map_location=device)


def official_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Merged native-named state dict of the official files present in `folder`."""
    merged: dict[str, torch.Tensor] = {}
    found = [f for f in FILES if (folder / f).is_file()]
    if not found:
        raise FileNotFoundError(f"{folder}: none of {', '.join(FILES)}")
    for fname in found:
        try:
            state = jit_state_dict(folder / fname)
        except (ValueError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError) as exc:
            raise ValueError(f"{folder / fname}: its weights cannot be read without running it as TorchScript "
                             f"({exc}); backend='jit' runs it (only for files you trust)") from exc
        for key, value in state.items():
            key = key.removeprefix("inv_quant.")
            if key in merged and merged[key].shape != value.shape:
                raise ValueError(f"{folder}: {fname} and another file disagree on the shape of {key}")
            merged[key] = value
    parts = {k.split(".")[0] for k in merged}
    for needed in ("encoder", "decoder"):
        if needed not in parts:
            raise ValueError(f"{folder}: the official files hold no {needed} weights "
                             f"(have {sorted(parts)}; need encoder.jit and decoder.jit, or autoencoder.jit)")
    return merged


def _split_buffers(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    buffers = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in _BUFFER_SUFFIXES}
    return {k: v for k, v in state.items() if k not in buffers}, buffers


def _check_buffers(tok: CosmosTokenizer, buffers: dict[str, torch.Tensor], source: str) -> None:
    """The official buffers are derived constants: they must equal ours (else the variant is unknown)."""
    own = dict(tok.named_buffers())
    for key, value in buffers.items():
        if key not in own:
            raise ValueError(f"{source}: unexpected buffer {key} (unknown tokenizer variant)")
        mine = own[key]
        if mine.shape != value.shape or not torch.allclose(mine.double(), value.double().to(mine.device), atol=1e-6):
            raise ValueError(f"{source}: buffer {key} differs from this architecture's (unknown variant)")


def _name_hint(folder: Path, name_hint: str | None) -> tuple[str | None, dict[str, Any]]:
    meta: dict[str, Any] = {}
    config_json = folder / "config.json"
    if config_json.is_file():
        try:
            meta = json.loads(config_json.read_text())
        except ValueError:
            log.warning("%s: config.json is not valid JSON; ignored", config_json)
    if name_hint:
        return name_hint, meta
    for text in (str(meta.get("name", "")), folder.name):
        match = re.search(r"([CD][VI])(\d+)x(\d+)(?:x(\d+))?", text)
        if match:
            return match.group(0), meta
    return None, meta


def config_for_folder(folder: Path, state: dict[str, torch.Tensor], name_hint: str | None) -> TokenizerConfig:
    hint, meta = _name_hint(folder, name_hint)
    return infer_config(state, hint, meta, source=str(folder))


def load_official(folder: str | Path, name_hint: str | None = None) -> CosmosTokenizer:
    """Official files -> native `CosmosTokenizer` (every tensor accounted for, strict names)."""
    folder = Path(folder)
    state = official_state_dict(folder)
    config = config_for_folder(folder, state, name_hint)
    weights, buffers = _split_buffers(state)
    tok = CosmosTokenizer(config)
    load_state_strict(tok, weights, str(folder))
    _check_buffers(tok, buffers, str(folder))
    log.info("loaded official %s from %s (variant: %s)", config.name, folder, config.to_dict())
    return tok


class JitTokenizer:
    """Runs official encoder.jit / decoder.jit as TorchScript, with the native tokenizer's interface."""

    def __init__(self, encoder: torch.jit.ScriptModule, decoder: torch.jit.ScriptModule,
                 config: TokenizerConfig, weights_hash: str) -> None:
        self.encoder, self.decoder, self.config = encoder, decoder, config
        self.weights_hash = weights_hash
        self.device, self.dtype = torch.device("cpu"), torch.float32

    @classmethod
    def load(cls, folder: str | Path, name_hint: str | None = None) -> JitTokenizer:
        folder = Path(folder)
        for needed in ("encoder.jit", "decoder.jit"):
            if not (folder / needed).is_file():
                raise FileNotFoundError(f"{folder}: backend='jit' needs {needed}")
        state = official_state_dict(folder)
        config = config_for_folder(folder, state, name_hint)
        weights, _ = _split_buffers(state)
        return cls(_jit_load(folder / "encoder.jit"), _jit_load(folder / "decoder.jit"), config, state_dict_hash(weights))

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> JitTokenizer:
        self.device = torch.device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        self.encoder = self.encoder.to(device=self.device, dtype=self.dtype)
        self.decoder = self.decoder.to(device=self.device, dtype=self.dtype)
        return self

    def eval(self) -> JitTokenizer:
        self.encoder.eval()
        self.decoder.eval()
        return self

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        out = self.encoder(video.to(device=self.device, dtype=self.dtype))
        if self.config.discrete:
            return out[0].long()  # (ids, codes, loss); official ids are int32
        return out[0] if isinstance(out, tuple | list) else out

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device)
        return self.decoder(tokens if self.config.discrete else tokens.to(self.dtype))


# ---------------------------------------------------------------------------- export (official layout)
class _IdentityDistribution(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        return x, (torch.zeros(1), torch.zeros(1))


class _InvQuantizer(nn.Module):
    def __init__(self, quantizer: FSQuantizer, dtype: torch.dtype) -> None:
        super().__init__()
        self.quantizer, self.dtype = quantizer, dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.quantizer.indices_to_codes(ids).to(self.dtype)


class _Autoencoder(nn.Module):
    def __init__(self, tok: CosmosTokenizer) -> None:
        super().__init__()
        self.encoder, self.decoder = tok.encoder, tok.decoder
        self.quant_conv, self.post_quant_conv, self.quantizer = tok.quant_conv, tok.post_quant_conv, tok.quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.quant_conv(self.encoder(x))
        if self.quantizer is not None:
            h, _ = self.quantizer.quantize(h)
        return self.decoder(self.post_quant_conv(h.to(x.dtype)))


def export_official_jit(tok: CosmosTokenizer, folder: str | Path, example: torch.Tensor,
                        autoencoder: bool = True) -> Path:
    """Trace `tok` into encoder.jit / decoder.jit (/ autoencoder.jit) laid out like the official release."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = tok.eval()
    dtype = tok.dtype
    quant: nn.Module = tok.quantizer if tok.quantizer is not None else _IdentityDistribution()
    encoder = nn.Sequential(OrderedDict(encoder=tok.encoder, quant_conv=tok.quant_conv, quantizer=quant))
    dec_parts: list[tuple[str, nn.Module]] = [("post_quant_conv", tok.post_quant_conv), ("decoder", tok.decoder)]
    if tok.quantizer is not None:
        dec_parts.insert(0, ("inv_quant", _InvQuantizer(tok.quantizer, dtype)))
    decoder = nn.Sequential(OrderedDict(dec_parts))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints: shapes are re-derived per call
        enc_out = encoder(example)
        latent = enc_out[0]
        torch.jit.trace(encoder, example, check_trace=False).save(str(folder / "encoder.jit"))
        torch.jit.trace(decoder, latent, check_trace=False).save(str(folder / "decoder.jit"))
        if autoencoder:
            torch.jit.trace(_Autoencoder(tok), example, check_trace=False).save(str(folder / "autoencoder.jit"))
    (folder / "config.json").write_text(json.dumps(tok.config.to_dict(), indent=1))
    return folder
