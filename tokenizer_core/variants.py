"""Work out a checkpoint's architecture from its state-dict keys and shapes.

Official releases differ in small ways: hybrid samplers with all convs kept vs unused branches
pruned to identities, a shorter decoder channel list for temporal factor 4, Haar patch size 2 for
the 360p releases, 256 z channels in DV4x8x8-360p. Everything that the tensors reveal is read
from them; the compression factors (not visible when sampler convs are kept) come from a name
hint ("DV8x16x16" in the folder name, config.json, or the caller). Anything that fits no known
layout fails with a message naming what is unknown.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from tokenizer_core.config import FSQ_LEVELS, TokenizerConfig, preset_config


class UnknownVariantError(ValueError):
    """The checkpoint's layout is not one tokenmill knows how to build."""


def _indices(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pat.match(k))})


def _shape(state: dict[str, torch.Tensor], key: str, source: str) -> torch.Size:
    if key not in state:
        raise UnknownVariantError(f"{source}: expected key {key} is missing (unknown tokenizer layout)")
    return state[key].shape


def _parse_hint(hint: str | None) -> tuple[str, int, int] | None:
    match = re.search(r"([CD][VI])(\d+)x(\d+)(?:x(\d+))?", hint or "")
    if not match:
        return None
    family, a, b = match.group(1), int(match.group(2)), int(match.group(3))
    return (family, a, b) if family[1] == "V" else (family, 1, a)


def _sampler_flags(state: dict[str, torch.Tensor], side: str, n_levels: int) -> tuple[list[int], list[int], bool]:
    """Levels whose sampler has a spatial / temporal conv, and whether all convs are kept everywhere."""
    kind = "downsample" if side == "encoder" else "upsample"
    spatial_conv, temporal_conv = ("conv1", "conv2") if side == "encoder" else ("conv2", "conv1")
    levels = range(n_levels - 1) if side == "encoder" else range(1, n_levels)
    spatial, temporal, kept = [], [], True
    for i in levels:
        base = f"{side}.{'down' if side == 'encoder' else 'up'}.{i}.{kind}."
        has_s = f"{base}{spatial_conv}.conv3d.weight" in state
        has_t = f"{base}{temporal_conv}.conv3d.weight" in state
        kept &= has_s and has_t and f"{base}conv3.conv3d.weight" in state
        spatial += [i] if has_s else []
        temporal += [i] if has_t else []
    return spatial, temporal, kept


def _video_fields(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    conv_in = _shape(state, "encoder.conv_in.0.conv3d.weight", source)
    channels, in_ch = conv_in[0], conv_in[1]
    patch = round((in_ch / 3) ** (1 / 3))
    if 3 * patch ** 3 != in_ch or patch & (patch - 1):
        raise UnknownVariantError(f"{source}: encoder input has {in_ch} channels: no Haar patch size fits")
    enc_levels, dec_levels = _indices(state, "encoder.down."), _indices(state, "decoder.up.")
    mult = [_shape(state, f"encoder.down.{i}.block.0.conv1.0.conv3d.weight", source)[0] // channels for i in enc_levels]
    dec_mult = [_shape(state, f"decoder.up.{i}.block.0.conv1.0.conv3d.weight", source)[0] // channels
                for i in dec_levels]
    blocks = len(_indices(state, "encoder.down.0.block."))
    dec_blocks = len(_indices(state, "decoder.up.0.block."))
    if dec_blocks != blocks + 1:
        raise UnknownVariantError(f"{source}: decoder has {dec_blocks} res blocks per level, encoder {blocks} "
                                  "(expected encoder + 1)")
    attn = [k for k in state if re.match(r"(encoder\.down|decoder\.up)\.\d+\.attn\.", k)]
    if attn:
        raise UnknownVariantError(f"{source}: attention inside resolution levels ({attn[0]}) is not a known variant")
    z_out = _shape(state, "encoder.conv_out.1.conv3d.weight", source)[0]
    z = _shape(state, "decoder.conv_in.0.conv3d.weight", source)[1]
    return dict(channels=channels, channels_mult=mult, decoder_channels_mult=None if dec_mult == mult else dec_mult,
                num_res_blocks=blocks, patch_size=patch, z_channels=z, z_factor=z_out // z)


def _image_fields(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    conv_in = _shape(state, "encoder.conv_in.weight", source)
    channels, in_ch = conv_in[0], conv_in[1]
    patch = math.isqrt(in_ch // 3)
    if 3 * patch * patch != in_ch:
        raise UnknownVariantError(f"{source}: encoder input has {in_ch} channels: no Haar patch size fits")
    levels = _indices(state, "encoder.down.")
    mult = [_shape(state, f"encoder.down.{i}.block.0.conv1.weight", source)[0] // channels for i in levels]
    downs = sum(f"encoder.down.{i}.downsample.conv.weight" in state for i in levels)
    z_out = _shape(state, "encoder.conv_out.weight", source)[0]
    z = _shape(state, "decoder.conv_in.weight", source)[1]
    return dict(channels=channels, channels_mult=mult, num_res_blocks=len(_indices(state, "encoder.down.0.block.")),
                patch_size=patch, z_channels=z, z_factor=z_out // z, spatial_compression=patch * 2 ** downs)


def _base_config(family: str, temporal: int, spatial: int) -> TokenizerConfig:
    name = f"{family}{temporal}x{spatial}x{spatial}" if family[1] == "V" else f"{family}{spatial}x{spatial}"
    try:
        return preset_config(name)
    except KeyError:
        discrete = family[0] == "D"
        return TokenizerConfig(name=name, family=family, spatial_compression=spatial,  # type: ignore[arg-type]
                               temporal_compression=temporal, latent_channels=6 if discrete else 16,
                               levels=list(FSQ_LEVELS) if discrete else None, num_groups=1 if family[1] == "V" else 32)


def infer_config(state: dict[str, torch.Tensor], hint: str | None, meta: dict[str, Any], source: str) -> TokenizerConfig:
    """The TokenizerConfig whose module has exactly `state`'s weights (buffers aside)."""
    video = "encoder.conv_in.0.conv3d.weight" in state
    if not video and "encoder.conv_in.weight" not in state:
        raise UnknownVariantError(f"{source}: neither a video (encoder.conv_in.0.conv3d) nor an image "
                                  "(encoder.conv_in) tokenizer layout")
    fields = _video_fields(state, source) if video else _image_fields(state, source)
    quant_key = "quant_conv.conv3d.weight" if video else "quant_conv.weight"
    latent = _shape(state, quant_key, source)[0] // fields["z_factor"]
    parsed = _parse_hint(hint)
    # FSQ models carry quantizer buffers in the official files; bare weights show 6 code channels.
    discrete = any(k.startswith("quantizer.") for k in state) or latent == len(FSQ_LEVELS)
    family = ("D" if discrete else "C") + ("V" if video else "I")
    if parsed and parsed[0] != family:
        raise UnknownVariantError(f"{source}: the name says {parsed[0]} but the weights are a {family} tokenizer")
    seen_spatial = fields.pop("spatial_compression", None)
    temporal = int(meta.get("temporal_compression") or 0) or (parsed[1] if parsed else None)
    spatial = int(meta.get("spatial_compression") or 0) or (parsed[2] if parsed else None) or seen_spatial
    if video:
        temporal, spatial = _video_factors(state, fields, temporal, spatial, source)
    elif seen_spatial and spatial != seen_spatial:
        raise UnknownVariantError(f"{source}: weights down-sample {seen_spatial}x but the name says {spatial}x")
    if spatial is None:
        raise UnknownVariantError(f"{source}: cannot tell the spatial compression; name the preset")
    cfg = _base_config(family, temporal or 1, spatial)
    if "quantizer._levels" in state:
        fields["levels"] = [int(v) for v in state["quantizer._levels"].tolist()]
    return cfg.replace(name=str(meta.get("name") or cfg.name), latent_channels=latent, **fields)


def _video_factors(state: dict[str, torch.Tensor], fields: dict[str, Any], temporal: int | None,
                   spatial: int | None, source: str) -> tuple[int, int]:
    n = len(fields["channels_mult"])
    s_levels, t_levels, kept = _sampler_flags(state, "encoder", n)
    fields["sampler_convs"] = "kept" if kept else "pruned"
    if not kept:
        # Pruned samplers reveal the factors: one conv per down-sampling step.
        seen_t, seen_s = fields["patch_size"] * 2 ** len(t_levels), fields["patch_size"] * 2 ** len(s_levels)
        if (temporal, spatial) not in ((None, None), (seen_t, seen_s)):
            raise UnknownVariantError(f"{source}: weights down-sample {seen_t}x{seen_s}x{seen_s} but the name "
                                      f"says {temporal}x{spatial}x{spatial}")
        return seen_t, seen_s
    if temporal is None or spatial is None:
        raise UnknownVariantError(
            f"{source}: cannot tell the temporal/spatial compression from these weights (all sampler convs "
            "are kept); put the preset name (e.g. DV8x16x16) in the folder name or pass it as the name")
    return temporal, spatial
