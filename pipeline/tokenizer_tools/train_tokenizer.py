"""`tokenmill train-tokenizer CONFIG.yaml [--set K=V]`: train or fine-tune a tokenizer.

Clips come from WebDataset shards through the same data plane as a job (`iter_shard`: decode,
resize the shorter side, centre crop). The training set is small enough here to keep in memory
as uint8, so each step draws random clips from the bank, takes a random crop of each and flips
it horizontally at random — all from the trainer's generator, so a resumed run sees exactly the
batches the uninterrupted run would have.

Checkpoints: `<output_dir>/step-XXXXXXX.pt` every `checkpoint_every` steps (the newest
`keep_checkpoints` are kept) and `<output_dir>/last.pt`, written to a temporary name and renamed
so a kill never leaves a torn file. Running the same command again resumes from `last.pt`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from schemas.config import SpecError
from schemas.training import TrainConfig, TrainDataSpec, load_train_config

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tokenizer_core.training import Trainer

log = logging.getLogger(__name__)


class ClipBank:
    """Decoded training clips (uint8 [T, H, W, 3] each) and the random batch drawn from them."""

    def __init__(self, clips: list[np.ndarray], crop: tuple[int, int] | None, hflip: bool, colour: bool = False):
        if not clips:
            raise SpecError("data.shards", "no training clips: the shards yielded no clip of data.num_frames frames")
        self.clips = clips
        self.crop = crop
        self.hflip = hflip
        self.colour = colour

    def __len__(self) -> int:
        return len(self.clips)

    def batch(self, batch_size: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """Random clips, random crops, random flips (and, with `colour`, a random order of the
        colour channels and saturation scaled by 0.5-2) -> float video [B, 3, T, h, w] in [-1, 1]
        on `device`. The crops travel as uint8 and become floats there (a quarter of the bytes
        over PCIe, and no float pass on the CPU when training on a GPU)."""
        import torch

        items, recolours = [], []
        for _ in range(batch_size):
            index = int(torch.randint(len(self.clips), (1,), generator=generator))
            frames = torch.from_numpy(self.clips[index])  # [T, H, W, 3] uint8
            _, height, width, _ = frames.shape
            ch, cw = self.crop or (height, width)
            top = int(torch.randint(height - ch + 1, (1,), generator=generator))
            left = int(torch.randint(width - cw + 1, (1,), generator=generator))
            flip = bool(torch.rand((1,), generator=generator) < 0.5) and self.hflip
            frames = frames[:, top:top + ch, left:left + cw]
            if flip:
                frames = frames.flip(2)
            items.append(frames.permute(3, 0, 1, 2))  # [3, T, h, w]
            if self.colour:
                recolours.append(_recolour_draw(generator))
        video = torch.stack(items).to(device, non_blocking=True).float()
        if self.colour:
            for clip, (order, factor) in zip(video, recolours, strict=True):
                grey = clip.mean(0, keepdim=True)
                clip.copy_((grey + (clip[order.to(clip.device)] - grey) * factor).clamp_(0.0, 255.0))
        return video.div_(127.5).sub_(1.0)


def _recolour_draw(generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """One clip's recolouring: its channels in a random order, then saturation scaled by a factor
    in [0.5, 2] (log-uniform) around each pixel's grey value: hues and saturations the footage
    itself rarely has."""
    import torch

    order = torch.randperm(3, generator=generator)
    return order, float(torch.exp((torch.rand((1,), generator=generator) * 2 - 1) * math.log(2.0)))


def load_clip_bank(data: TrainDataSpec) -> ClipBank:
    """Read every clip of the training shards through the data plane into memory."""
    from pipeline.readers.sources import expand_shards
    from pipeline.readers.stages import iter_shard
    from pipeline.records import Clip, ShardStats
    from schemas.jobspec import ClipSpec

    spec = ClipSpec(num_frames=data.num_frames, fps=data.fps, stride=data.stride,
                    max_clips_per_video=data.max_clips_per_video, resolution=data.resolution,
                    decoder=data.decoder)
    clips: list[np.ndarray] = []
    for url in expand_shards(data.shards, data.storage_options):
        stats = ShardStats()
        for item in iter_shard(url, spec, data.storage_options, stats, isolate=False):
            if isinstance(item, Clip):
                clips.append(np.ascontiguousarray(item.frames))
            else:
                log.warning("skipping %s/%s: %s", item.source_url, item.sample_key, item.message)
        log.info("%s: %d samples, %d clips", url, stats.samples_ok, stats.clips)
    return ClipBank(clips, data.crop, data.hflip, data.colour)


def build_model(cfg: TrainConfig) -> nn.Module:
    """The tokenizer module to train (a CosmosTokenizer: forward() is its reconstruction)."""
    import tokenizer_core
    from tokenizer_core.loading import build

    spec = cfg.model
    if spec.overrides:
        try:
            base = tokenizer_core.preset_config(spec.name).to_dict()
            config = tokenizer_core.TokenizerConfig.from_dict({**base, **spec.overrides})
        except KeyError as exc:
            raise SpecError("model.name", str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise SpecError("model.overrides", str(exc)) from None
        tok = build(config.replace(name=spec.save_as or config.name))
    else:
        try:
            tok = tokenizer_core.from_pretrained(spec.name, device="cpu", init=spec.init)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise SpecError("model.name", str(exc)) from None
        if spec.save_as:
            tok.config = tok.config.replace(name=spec.save_as)
    if spec.trainable != "all":  # the other half keeps its weights: no gradient, no optimizer step
        frozen = ("decoder", "post_quant_conv") if spec.trainable == "encoder" else ("encoder", "quant_conv")
        for name, param in tok.named_parameters():
            if name.startswith(tuple(f"{part}." for part in frozen)):
                param.requires_grad_(False)
    return tok


def config_of(module: nn.Module) -> Any:
    """The TokenizerConfig of a tokenizer module."""
    return getattr(module, "config")  # noqa: B009 - nn.Module's typing hides the attribute


def settings_from(cfg: TrainConfig) -> Any:
    from tokenizer_core.training import TrainSettings

    return TrainSettings(
        steps=cfg.steps,
        optim=cfg.optim,
        loss=cfg.loss,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
        log_every=cfg.log_every,
        max_minutes=cfg.max_minutes,
    )


def write_checkpoint(path: str, module: nn.Module, extra: dict[str, Any],
                     training: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> None:
    """A tokenmill checkpoint (tokenizer_core.checkpoint format) plus, for resumable ones, the
    training state under the top-level key "training" (tensors: optimizer moments, RNG states).

    `state_dict` holds `module`'s weights (the EMA weights while training), optionally cast to
    `dtype`, so `from_pretrained(path)` gives the trained model. Written to a temporary name and
    renamed, so a kill never leaves a torn file.
    """
    import torch

    from tokenizer_core.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

    state = {}
    for name, value in module.state_dict().items():
        value = value.detach().to("cpu").clone()
        state[name] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "config": config_of(module).to_dict(), "state_dict": state, "extra": extra}
    if training is not None:
        payload["training"] = training
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def make_saver(cfg: TrainConfig) -> Any:
    """The fit() callback writing step-XXXXXXX.pt / last.pt."""
    from tokenizer_core.training import prune_checkpoints

    def save(trainer: Trainer, reason: str) -> None:
        extra = {"train_config": cfg.to_dict(), "steps": trainer.step,
                 "train_seconds": round(trainer.elapsed, 1)}
        state = trainer.training_state()
        write_checkpoint(os.path.join(cfg.output_dir, "last.pt"), trainer.inference_model, extra, state)
        if reason == "periodic":
            numbered = os.path.join(cfg.output_dir, f"step-{trainer.step:07d}.pt")
            write_checkpoint(numbered, trainer.inference_model, extra, state)
            prune_checkpoints(cfg.output_dir, cfg.keep_checkpoints)
        log.info("checkpoint at step %d (%s) in %s", trainer.step, reason, cfg.output_dir)

    return save


def resume_if_any(trainer: Trainer, cfg: TrainConfig) -> None:
    """Continue from output_dir/last.pt (same step, weights, optimizer, EMA, RNG) if it exists."""
    import torch

    path = os.path.join(cfg.output_dir, "last.pt")
    if not cfg.resume or not os.path.exists(path):
        return
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "training" not in ckpt:
        raise SpecError("output_dir", f"{path} holds no training state (an exported model?); "
                                      "use another output_dir")
    ours = config_of(trainer.model).to_dict()
    if ckpt.get("config") != ours:
        raise SpecError("model", f"{path} was trained with a different model config; use a new "
                                 "output_dir or set resume: false")
    trainer.load_training_state(ckpt["training"], ckpt["state_dict"])
    _truncate_log(os.path.join(cfg.output_dir, "train_log.jsonl"), trainer.step)
    log.info("resuming from %s at step %d", path, trainer.step)


def _truncate_log(path: str, step: int) -> None:
    """Drop log records past the resumed step: those steps are about to be run again."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        lines = [line for line in fh if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(lines)


def export(trainer: Trainer, cfg: TrainConfig) -> None:
    """Write the inference weights alone (e.g. fp16) to export.path: the shippable model."""
    import torch

    if cfg.export is None:
        return
    os.makedirs(os.path.dirname(cfg.export.path) or ".", exist_ok=True)
    extra = {"train_config": cfg.to_dict(), "steps": trainer.step, "train_seconds": round(trainer.elapsed, 1)}
    write_checkpoint(cfg.export.path, trainer.inference_model, extra, dtype=getattr(torch, cfg.export.dtype))
    log.info("exported %s weights to %s", cfg.export.dtype, cfg.export.path)


def run_training(cfg: TrainConfig) -> Trainer:
    """Build, resume if possible, train, checkpoint and export; returns the finished trainer."""
    import torch

    from tokenizer_core.training import Trainer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else cfg.device
    device = "cpu" if device == "auto" else device
    os.makedirs(cfg.output_dir, exist_ok=True)
    module = build_model(cfg)
    bank = load_clip_bank(cfg.data)
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    log.info("training %s (%.2fM parameters, %s) on %d clips (%s)", config_of(module).name, params / 1e6,
             cfg.model.trainable, len(bank), device)
    trainer = Trainer(module, settings_from(cfg), device=device)
    resume_if_any(trainer, cfg)
    trainer.fit(lambda gen: bank.batch(cfg.batch_size, gen, trainer.device), save=make_saver(cfg),
                log_path=os.path.join(cfg.output_dir, "train_log.jsonl"))
    export(trainer, cfg)
    return trainer


def cli_train(args: argparse.Namespace) -> int:
    cfg = load_train_config(args.config, args.overrides)
    run_training(cfg)
    return 0
