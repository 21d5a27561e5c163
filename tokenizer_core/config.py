"""Tokenizer architecture configs and the preset table.

A `TokenizerConfig` fully determines the module tree (and so the state-dict names and shapes).
The official presets carry the hyper-parameters of NVIDIA's Cosmos Tokenizer release
(`cosmos_tokenizer/networks/configs.py`); the `-tiny` presets keep the same architecture
(Haar patch 4, factorized causal convs, hybrid samplers, mid attention, FSQ) at a size that runs
a 17x64x64 clip in well under a second on one CPU core.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["CV", "DV", "CI", "DI"]

FSQ_LEVELS = [8, 8, 8, 5, 5, 5]
_DERIVED_KEYS = ("discrete", "video", "vocab_size")


@dataclass
class TokenizerConfig:
    """Architecture of one tokenizer. `to_dict()` is plain JSON; `from_dict` inverts it."""

    name: str
    family: Family
    spatial_compression: int
    temporal_compression: int = 1
    channels: int = 128
    channels_mult: list[int] = field(default_factory=lambda: [2, 4, 4])
    # Decoder multipliers when they differ from the encoder's (CV4x8x8 releases use [2, 4]).
    decoder_channels_mult: list[int] | None = None
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [32])
    resolution: int = 1024
    patch_size: int = 4
    patch_method: Literal["haar", "rearrange"] = "haar"
    z_channels: int = 16
    z_factor: int = 1
    # Continuous: channels of the latent. Discrete: FSQ code dimensions (= len(levels)).
    latent_channels: int = 16
    levels: list[int] | None = None
    num_groups: int = 1
    legacy_mode: bool = False
    dropout: float = 0.0
    # "kept": hybrid samplers own all three convs even where a branch is unused (Cosmos-Tokenizer
    # 1.0 releases); "pruned": unused branches are identities (Cosmos-Tokenize1 / predict1).
    sampler_convs: Literal["kept", "pruned"] = "kept"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def discrete(self) -> bool:
        return self.family[0] == "D"

    @property
    def video(self) -> bool:
        return self.family[1] == "V"

    @property
    def vocab_size(self) -> int | None:
        return math.prod(self.levels) if self.discrete and self.levels else None

    @property
    def dec_channels_mult(self) -> list[int]:
        return list(self.decoder_channels_mult or self.channels_mult)

    def validate(self) -> None:
        if self.family not in ("CV", "DV", "CI", "DI"):
            raise ValueError(f"tokenizer config {self.name!r}: family must be CV, DV, CI or DI, got {self.family!r}")
        for label, value in (("spatial_compression", self.spatial_compression),
                             ("temporal_compression", self.temporal_compression),
                             ("patch_size", self.patch_size)):
            if value < 1 or value & (value - 1):
                raise ValueError(f"tokenizer config {self.name!r}: {label} must be a power of two, got {value}")
        if not self.video and self.temporal_compression != 1:
            raise ValueError(f"tokenizer config {self.name!r}: image tokenizers have temporal_compression 1")
        if self.discrete and not self.levels:
            raise ValueError(f"tokenizer config {self.name!r}: discrete tokenizers need FSQ levels")
        if self.discrete and self.levels and self.latent_channels != len(self.levels):
            raise ValueError(f"tokenizer config {self.name!r}: latent_channels must equal len(levels) for FSQ")
        if self.spatial_compression < self.patch_size:
            raise ValueError(f"tokenizer config {self.name!r}: spatial_compression < patch_size")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(discrete=self.discrete, video=self.video, vocab_size=self.vocab_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - set(_DERIVED_KEYS))
        if unknown:
            raise ValueError(f"tokenizer config: unknown keys {unknown}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> TokenizerConfig:
        return dataclasses.replace(self, **changes)


def _official(name: str) -> TokenizerConfig:
    family = name[:2]
    factors = [int(f) for f in name[2:].split("x")]
    video = family[1] == "V"
    temporal, spatial = (factors[0], factors[1]) if video else (1, factors[0])
    discrete = family[0] == "D"
    cfg = TokenizerConfig(
        name=name,
        family=family,  # type: ignore[arg-type]
        spatial_compression=spatial,
        temporal_compression=temporal,
        # The official DI models quantise from 256 encoder channels; video and CI use 16.
        z_channels=256 if family == "DI" else 16,
        latent_channels=len(FSQ_LEVELS) if discrete else 16,
        levels=list(FSQ_LEVELS) if discrete else None,
        # Image models use 32-group GroupNorm (2D); video models a per-frame LayerNorm.
        num_groups=1 if video else 32,
    )
    if family == "CV" and temporal == 4:
        # continuous_video.py swaps the decoder to channels_mult=[2, 4] for temporal factor 4.
        cfg.decoder_channels_mult = [2, 4]
    return cfg


def _tiny(name: str) -> TokenizerConfig:
    base = _official(name.removesuffix("-tiny"))
    image = not base.video
    spatial_downs = int(math.log2(base.spatial_compression // base.patch_size))
    temporal_downs = int(math.log2(max(base.temporal_compression // base.patch_size, 1)))
    # Video decoders (non-legacy rule) up-sample in time one level later than the encoder
    # down-samples, so they need one level more than the number of temporal steps.
    levels_needed = max(2, spatial_downs) if image else max(spatial_downs, temporal_downs + 1) + 1
    return base.replace(
        name=name,
        channels=32 if image else 16,
        channels_mult=[1, 2] + [2] * (levels_needed - 2),
        decoder_channels_mult=None,
        num_res_blocks=1,
        z_channels=32 if base.family == "DI" else base.z_channels,
    )


OFFICIAL_PRESETS = ["CV4x8x8", "CV8x8x8", "CV8x16x16", "DV4x8x8", "DV8x8x8", "DV8x16x16",
                    "CI8x8", "CI16x16", "DI8x8", "DI16x16"]
TINY_PRESETS = [f"{n}-tiny" for n in OFFICIAL_PRESETS]


def list_presets() -> list[str]:
    """Names accepted by `preset_config` (official architectures, then tiny ones)."""
    return OFFICIAL_PRESETS + TINY_PRESETS


def preset_config(name: str) -> TokenizerConfig:
    """The architecture of a preset; raises KeyError naming the known presets."""
    if name in OFFICIAL_PRESETS:
        return _official(name)
    if name in TINY_PRESETS:
        return _tiny(name)
    raise KeyError(f"unknown tokenizer preset {name!r}; known presets: {', '.join(list_presets())}")
