"""The training config (YAML) for `tokenmill train-tokenizer`.

Versioned by `TRAINING_CONFIG_VERSION`. Loaded with `schemas.config.from_dict`: unknown keys
and wrong types are `SpecError`s naming the dotted field; relative paths resolve against the
config file's folder.

    data:      which shards, how clips are cut, and the augmentation (random crop, flips)
    model:     what to train: a preset/bundled name, a checkpoint to fine-tune, or random init,
               plus architecture overrides for from-scratch runs
    optim:     AdamW, warmup + cosine decay, gradient clipping, EMA
    loss:      weights of the L1, squared-error, SSIM and temporal terms
    export:    optional fp16 copy of the EMA weights (e.g. into tokenizer_core/bundled/<name>/)
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field

from schemas.config import Config, SpecError, from_dict, load_yaml, set_dotted, to_dict

TRAINING_CONFIG_VERSION = 1


class TrainDataSpec(Config):
    """Training clips: shards, how clips are cut, and the augmentation (random crop, flips, colour)."""

    shards: str | list[str]
    storage_options: dict[str, Any] = Field(default_factory=dict)
    num_frames: int = 17  # frames per training clip: 1 + k * temporal compression
    resolution: tuple[int, int] = (256, 256)  # decoded size (resize shorter side, centre crop)
    crop: tuple[int, int] | None = (128, 128)  # random crop of each clip; null trains on full frames
    stride: int | None = 4  # frames between clip starts (overlapping clips = more positions)
    fps: float | None = None
    max_clips_per_video: int | None = None
    hflip: bool = True
    colour: bool = False  # random channel order and saturation (x0.5-2) per clip
    decoder: Literal["decord", "pyav"] = "pyav"

    def validate(self, path: str) -> None:
        if self.num_frames < 1:
            raise SpecError(f"{path}.num_frames", "must be >= 1")
        if min(self.resolution) < 1:
            raise SpecError(f"{path}.resolution", "must be two positive integers [H, W]")
        if self.crop is not None:
            if min(self.crop) < 1:
                raise SpecError(f"{path}.crop", "must be two positive integers [H, W] or null")
            if self.crop[0] > self.resolution[0] or self.crop[1] > self.resolution[1]:
                raise SpecError(f"{path}.crop", f"{list(self.crop)} is larger than resolution {list(self.resolution)}")
        if self.stride is not None and self.stride < 1:
            raise SpecError(f"{path}.stride", "must be >= 1 or null")


class TrainModelSpec(Config):
    """What to train: a preset or bundled name, a checkpoint to fine-tune, or random init."""

    name: str  # preset or bundled name, tokenmill checkpoint path, or folder of official .jit files
    init: Literal["pretrained", "random"] = "pretrained"
    # architecture fields changed from the preset's config (random init only), e.g. {channels: 48}
    overrides: dict[str, Any] = Field(default_factory=dict)
    # name written into the trained model's config (defaults to the preset's name)
    save_as: str | None = None
    # which half trains: "encoder" keeps the decoder (so what every id decodes to) as it was,
    # "decoder" keeps the encoder (so every id a clip gets)
    trainable: Literal["all", "encoder", "decoder"] = "all"

    def validate(self, path: str) -> None:
        if self.overrides and self.init != "random":
            raise SpecError(f"{path}.overrides", "architecture overrides need init: random (weights would not fit)")
        if self.trainable != "all" and self.init != "pretrained":
            raise SpecError(f"{path}.trainable", "training one half needs init: pretrained (the other half would stay random)")


class OptimSpec(Config):
    """AdamW, warmup + cosine decay, gradient clipping, EMA."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.999  # 0 disables EMA (the raw weights are then the result)

    def validate(self, path: str) -> None:
        if self.lr <= 0:
            raise SpecError(f"{path}.lr", "must be > 0")
        if self.warmup_steps < 0:
            raise SpecError(f"{path}.warmup_steps", "must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise SpecError(f"{path}.ema_decay", "must be in [0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise SpecError(f"{path}.min_lr_ratio", "must be in [0, 1]")
        if self.grad_clip < 0:
            raise SpecError(f"{path}.grad_clip", "must be >= 0")


class LossSpec(Config):
    """Weights of the L1, squared-error, SSIM and temporal loss terms."""

    l1: float = 1.0
    mse: float = 0.0  # squared error: the term PSNR measures
    ssim: float = 0.2
    temporal: float = 0.5
    # latent search (FSQ models): pull the encoder's latent towards the one that `search_steps`
    # Adam steps of size `search_lr` on the batch's squared error reach through the current decoder;
    # `latent` weighs that distance (in quantiser levels, squared). 0 disables it.
    latent: float = 0.0
    search_steps: int = 8
    search_lr: float = 0.03

    def validate(self, path: str) -> None:
        for name in ("l1", "mse", "ssim", "temporal", "latent"):
            if getattr(self, name) < 0:
                raise SpecError(f"{path}.{name}", "must be >= 0")
        if self.latent and self.search_steps < 1:
            raise SpecError(f"{path}.search_steps", "must be >= 1 when latent > 0")
        if self.search_lr <= 0:
            raise SpecError(f"{path}.search_lr", "must be > 0")


class ExportSpec(Config):
    """An optional copy of the final EMA weights, e.g. into tokenizer_core/bundled/<name>/."""

    path: str  # where the final EMA weights go, e.g. tokenizer_core/bundled/<name>/model.pt
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"


class TrainConfig(Config):
    """A `tokenmill train-tokenizer` run."""

    data: TrainDataSpec
    model: TrainModelSpec
    output_dir: str  # checkpoints (step-XXXXXXX.pt, last.pt) and train_log.jsonl
    steps: int
    batch_size: int = 4
    seed: int = 0
    optim: OptimSpec = Field(default_factory=OptimSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2  # numbered checkpoints kept besides last.pt
    log_every: int = 20
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None  # torch intra-op threads on CPU; null keeps torch's default
    resume: bool = True  # continue from output_dir/last.pt when it exists
    max_minutes: float | None = None  # wall-time budget: stop early with a checkpoint (and export)
    export: ExportSpec | None = None
    version: int = TRAINING_CONFIG_VERSION

    def validate(self, path: str) -> None:
        if self.steps < 1:
            raise SpecError(f"{path}steps", "must be >= 1")
        if self.batch_size < 1:
            raise SpecError(f"{path}batch_size", "must be >= 1")
        if self.checkpoint_every < 1:
            raise SpecError(f"{path}checkpoint_every", "must be >= 1")
        if self.log_every < 1:
            raise SpecError(f"{path}log_every", "must be >= 1")
        if self.version != TRAINING_CONFIG_VERSION:
            raise SpecError(f"{path}version", f"unsupported version {self.version} (this tokenmill reads "
                                              f"{TRAINING_CONFIG_VERSION})")

    def to_dict(self) -> dict[str, Any]:
        data = to_dict(self)
        data["data"]["storage_options"] = {k: "<redacted>" for k in self.data.storage_options}
        return data


def _resolve(value: str, base: str) -> str:
    if "://" in value or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base, value))


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/")) or name.endswith((".pt", ".pth", ".safetensors"))


def resolve_paths(cfg: TrainConfig, base: str) -> TrainConfig:
    """Relative local paths resolve against the config file's folder."""
    shards = cfg.data.shards
    shards = _resolve(shards, base) if isinstance(shards, str) else [_resolve(s, base) for s in shards]
    model = cfg.model
    if _looks_like_path(model.name):
        model = model.model_copy(update={"name": _resolve(model.name, base)})
    export = cfg.export and cfg.export.model_copy(update={"path": _resolve(cfg.export.path, base)})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"shards": shards}), "model": model,
                                  "output_dir": _resolve(cfg.output_dir, base), "export": export})


def load_train_config(path: str, overrides: list[str] | None = None) -> TrainConfig:
    """Load and validate a training config file; raises SpecError naming the bad field."""
    data = load_yaml(path)
    for assignment in overrides or []:
        set_dotted(data, assignment)
    cfg = from_dict(TrainConfig, data)
    return resolve_paths(cfg, os.path.dirname(os.path.abspath(path)))


__all__ = [
    "TRAINING_CONFIG_VERSION",
    "TrainConfig",
    "TrainDataSpec",
    "TrainModelSpec",
    "OptimSpec",
    "LossSpec",
    "ExportSpec",
    "load_train_config",
]
