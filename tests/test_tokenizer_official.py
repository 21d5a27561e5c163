"""Official-format checkpoints: files traced the way NVIDIA's release is made load into the native
module with strict names, run as TorchScript with backend="jit", and agree within 1e-4 (fp32).
Release variants are detected from keys and shapes; unknown layouts fail naming what is unknown.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tokenizer_core as tc
from tokenizer_core import official
from tokenizer_core.model import CosmosTokenizer
from tokenizer_core.variants import UnknownVariantError

torch.set_num_threads(1)


def _video(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _model(config: tc.TokenizerConfig) -> CosmosTokenizer:
    tok = tc.loading.build(config)
    if config.discrete:  # spread the pre-quantisation values so that ids vary at random init
        with torch.no_grad():
            for p in tok.quant_conv.parameters():
                p.mul_(200.0)
    return tok.eval()


def _export(tok: CosmosTokenizer, folder: Path, name_in_config: bool = True, autoencoder: bool = False) -> Path:
    example = _video(9, 16, 16) if tok.config.video else _video(1, 16, 16)[:, :, 0]
    official.export_official_jit(tok, folder, example, autoencoder=autoencoder)
    if not name_in_config:
        (folder / "config.json").unlink()
    return folder


@pytest.mark.parametrize("name", ["DV8x16x16-tiny", "CV8x8x8-tiny", "DI8x8-tiny"])
def test_official_files_load_natively_and_match_jit(name: str, tmp_path: Path) -> None:
    """Native (weights mapped from the .jit files) == TorchScript run, at the traced and another shape."""
    tok = _model(tc.preset_config(name))
    folder = _export(tok, tmp_path / name, autoencoder=True)
    assert sorted(p.name for p in folder.glob("*.jit")) == ["autoencoder.jit", "decoder.jit", "encoder.jit"]
    keys = torch.jit.load(str(folder / "encoder.jit")).state_dict().keys()
    assert "encoder.conv_in.0.conv3d.weight" in keys or "encoder.conv_in.weight" in keys
    native = tc.from_pretrained(folder)
    jit = tc.from_pretrained(folder, backend="jit")
    assert native.weights_hash == jit.weights_hash == tok.weights_hash
    shapes = [(9, 16, 16), (17, 32, 48)] if tok.config.video else [(1, 16, 16), (1, 32, 48)]
    for t, h, w in shapes:
        x = _video(t, h, w, seed=3) if tok.config.video else _video(1, h, w, seed=3)[:, :, 0]
        a, b = native.encode(x), jit.encode(x)
        if tok.config.discrete:
            assert torch.equal(a, b) and a.dtype == b.dtype == torch.int64
        else:
            assert torch.allclose(a, b, atol=1e-4)
        assert torch.allclose(native.decode(a), jit.decode(b), atol=1e-4)


def test_autoencoder_jit_alone_is_enough_for_native_loading(tmp_path: Path) -> None:
    tok = _model(tc.preset_config("DV4x8x8-tiny"))
    folder = _export(tok, tmp_path / "DV4x8x8-tiny", autoencoder=True)
    (folder / "encoder.jit").unlink()
    (folder / "decoder.jit").unlink()
    assert tc.from_pretrained(folder).weights_hash == tok.weights_hash


def test_missing_or_unexpected_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _export(_model(tc.preset_config("CV4x8x8-tiny")), tmp_path / "CV4x8x8-tiny")
    real = official.official_state_dict

    def tampered(path: Path) -> dict[str, torch.Tensor]:
        state = real(path)
        del state["decoder.conv_out.1.conv3d.bias"]
        state["encoder.mystery.weight"] = torch.zeros(3)
        return state

    monkeypatch.setattr(official, "official_state_dict", tampered)
    with pytest.raises(ValueError, match=r"missing keys \['decoder.conv_out.1.conv3d.bias'\].*encoder.mystery"):
        tc.from_pretrained(folder)


def test_pruned_sampler_variant_reveals_its_factors(tmp_path: Path) -> None:
    """Unused sampler branches as identities (Cosmos-Tokenize1 style): factors read from the keys alone."""
    cfg = tc.preset_config("DV8x16x16-tiny").replace(sampler_convs="pruned")
    tok = _model(cfg)
    folder = _export(tok, tmp_path / "anonymous", name_in_config=False)
    back = tc.from_pretrained(folder)
    assert back.config.sampler_convs == "pruned"
    assert (back.config.temporal_compression, back.config.spatial_compression) == (8, 16)
    assert back.weights_hash == tok.weights_hash


def test_kept_sampler_variant_without_a_name_is_refused_clearly(tmp_path: Path) -> None:
    folder = _export(_model(tc.preset_config("DV8x16x16-tiny")), tmp_path / "anonymous", name_in_config=False)
    with pytest.raises(UnknownVariantError, match="cannot tell the temporal/spatial compression"):
        tc.from_pretrained(folder)
    named = tc.from_pretrained("DV8x16x16", checkpoint=folder)
    assert named.config.temporal_compression == 8 and named.config.spatial_compression == 16


@pytest.mark.parametrize("changes", [
    {"patch_size": 2, "channels_mult": [1, 2, 2]},          # 360p releases: Haar patch 2
    {"z_channels": 32},                                      # DV4x8x8-360p: wider z
    {"channels_mult": [1, 2, 2], "decoder_channels_mult": [1, 2]},  # CV4x8x8: shorter decoder list
])
def test_release_variants_are_detected_from_shapes(changes: dict, tmp_path: Path) -> None:
    cfg = tc.preset_config("CV4x8x8-tiny").replace(**changes)
    tok = _model(cfg)
    folder = _export(tok, tmp_path / "Cosmos-Tokenizer-CV4x8x8", name_in_config=False)
    back = tc.from_pretrained(folder)
    for key, value in changes.items():
        assert getattr(back.config, key) == value
    assert back.weights_hash == tok.weights_hash
    x = _video(9, 16, 16)
    assert torch.allclose(back.encode(x), tok.encode(x), atol=1e-5)


def test_level_attention_is_an_unknown_variant(tmp_path: Path) -> None:
    cfg = tc.preset_config("CV4x8x8-tiny").replace(attn_resolutions=[4], resolution=16)
    tok = _model(cfg)
    assert any(".down.0.attn." in k for k in tok.state_dict())
    folder = _export(tok, tmp_path / "CV4x8x8-odd")
    with pytest.raises(UnknownVariantError, match="attention inside resolution levels"):
        tc.from_pretrained(folder)


def test_name_that_contradicts_the_weights_is_refused(tmp_path: Path) -> None:
    folder = _export(_model(tc.preset_config("CV4x8x8-tiny")), tmp_path / "x")
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({"name": data["name"]}))
    with pytest.raises(UnknownVariantError, match="name says DV"):
        tc.from_pretrained("DV4x8x8", checkpoint=folder)
