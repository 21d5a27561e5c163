"""Training loop for tokenizers: AdamW, warmup + cosine decay, EMA, clipping, exact resume.

Shape legend: video [B, 3, T, H, W] in [-1, 1]; the model's forward returns its
reconstruction of the same shape (discrete models pass FSQ through straight-through).

The loop knows nothing about where clips come from: `fit` takes a `next_batch(generator)`
function, and the trainer owns the `torch.Generator` it passes, so a checkpoint captures the
data order too. A checkpoint is one `torch.save` file in the tokenmill tokenizer format
(`tokenizer_core.save_checkpoint`): its `state_dict` holds the weights to use for inference
(the EMA weights when EMA is on), so `from_pretrained(checkpoint)` loads a trained model
directly, and `extra["training"]` holds everything needed to continue the same run — raw
weights, optimizer moments, step, EMA, RNG states. Only tensors and plain Python values are
stored, so `torch.load(..., weights_only=True)` reads it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# the optim section of the training config is the one definition of these settings and defaults
from schemas.training import OptimSpec as OptimSettings
from tokenizer_core.losses import LossWeights, reconstruction_loss

log = logging.getLogger(__name__)

NextBatch = Callable[[torch.Generator], torch.Tensor]  # generator -> video [B, 3, T, H, W]


@dataclass
class TrainSettings:
    steps: int
    optim: OptimSettings = field(default_factory=OptimSettings)
    loss: LossWeights = field(default_factory=LossWeights)
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 20
    max_minutes: float | None = None  # stop early (with a checkpoint) once this much time has run


def learning_rate(step: int, total: int, optim: OptimSettings) -> float:
    """Linear warmup to optim.lr, then cosine decay to lr * min_lr_ratio at `total` steps."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    span = max(1, total - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    floor = optim.lr * optim.min_lr_ratio
    return floor + (optim.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def reconstruct(model: nn.Module, video: torch.Tensor) -> torch.Tensor:
    """The model's differentiable reconstruction, whatever small wrapper its forward returns."""
    out = model(video)
    if isinstance(out, torch.Tensor):
        return out
    for name in ("reconstruction", "recon", "video", "sample"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"cannot find a reconstruction in the model output of type {type(out).__name__}")


def latent_gap(model: nn.Module, video: torch.Tensor, steps: int, lr: float) -> tuple[Any, torch.Tensor]:
    """The model's `forward_with_latent_gap` (CosmosTokenizer), with a clear error for other models."""
    method = getattr(model, "forward_with_latent_gap", None)
    if method is None:
        raise TypeError(f"loss.latent needs a tokenmill FSQ tokenizer; {type(model).__name__} has no latent search")
    return method(video, steps, lr)


class Trainer:
    """Owns the model, its EMA copy, the optimizer and the RNGs of one training run."""

    def __init__(self, model: nn.Module, settings: TrainSettings, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).train()
        self.settings = settings
        self.ema: nn.Module | None = None
        if settings.optim.ema_decay > 0:
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        o = settings.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=o.betas,
                                           weight_decay=o.weight_decay)
        self.step = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.generator = torch.Generator().manual_seed(settings.seed)  # data order
        torch.manual_seed(settings.seed)

    # ---- one step -------------------------------------------------------------------------
    def train_step(self, video: torch.Tensor) -> dict[str, float]:
        """One optimizer step on a batch; returns the loss parts, lr and grad norm."""
        lr = learning_rate(self.step, self.settings.steps, self.settings.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        video = video.to(self.device, non_blocking=True)
        # bf16 autocast on CUDA only: CPU bf16 convs are slower here and fp32 is the reference
        weights = self.settings.loss
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            if weights.latent:
                out, gap = latent_gap(self.model, video, weights.search_steps, weights.search_lr)
                recon = out.reconstruction
            else:
                recon = reconstruct(self.model, video)
        loss, parts = reconstruction_loss(recon, video, weights)
        if weights.latent:
            loss = loss + weights.latent * gap.float()
            parts = {**parts, "latent_gap": float(gap.detach()), "loss": float(loss.detach())}
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}: lower optim.lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.settings.optim.grad_clip
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        return {**parts, "lr": lr, "grad_norm": float(norm)}

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        # the usual warm-up of the decay, so early EMA weights are not dominated by the init
        decay = min(self.settings.optim.ema_decay, (1 + self.step) / (10 + self.step))
        for ema_p, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            ema_b.copy_(b)

    @property
    def inference_model(self) -> nn.Module:
        """The weights to evaluate and ship: EMA when enabled, else the raw model."""
        return self.ema if self.ema is not None else self.model

    # ---- state ----------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (tensors and plain values only)."""
        return {
            "step": self.step,
            "elapsed_seconds": self.elapsed,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": {"data": self.generator.get_state(), "torch": torch.get_rng_state()},
        }

    def load_training_state(self, state: dict[str, Any], inference_weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(inference_weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_seconds", 0.0))
        self.generator.set_state(state["rng"]["data"])
        torch.set_rng_state(state["rng"]["torch"])

    # ---- the loop -------------------------------------------------------------------------
    def fit(self, next_batch: NextBatch, save: Callable[[Trainer, str], None] | None = None,
            log_path: str | None = None) -> dict[str, float]:
        """Train until settings.steps (or max_minutes); `save(trainer, reason)` writes checkpoints."""
        s = self.settings
        bar = _progress(self.step, s.steps)
        window: list[dict[str, float]] = []
        started, window_start = time.perf_counter(), time.perf_counter()
        base_elapsed, frames = self.elapsed, 0
        last: dict[str, float] = {}
        while self.step < s.steps:
            video = next_batch(self.generator)
            last = self.train_step(video)
            frames += video.shape[0] * video.shape[2]
            window.append(last)
            self.elapsed = base_elapsed + time.perf_counter() - started
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if self.step % s.log_every == 0 or self.step == s.steps:
                seconds = time.perf_counter() - window_start
                _log_window(self.step, window, frames, seconds, log_path)
                window, frames, window_start = [], 0, time.perf_counter()
            if save is not None and self.step % s.checkpoint_every == 0:
                save(self, "periodic")
            if s.max_minutes is not None and self.elapsed > 60 * s.max_minutes:  # the final save follows
                log.warning("stopping at step %d: max_minutes=%s reached", self.step, s.max_minutes)
                break
        if bar is not None:
            bar.close()
        if save is not None:
            save(self, "final")
        return last


def _progress(start: int, total: int) -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)


def _log_window(step: int, window: list[dict[str, float]], frames: int, seconds: float,
                log_path: str | None) -> None:
    mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    record = {"step": step, **{k: round(v, 6) for k, v in mean.items()},
              "steps_per_s": round(len(window) / max(seconds, 1e-9), 4),
              "frames_per_s": round(frames / max(seconds, 1e-9), 2)}
    log.info("step %d loss %.4f (l1 %.4f) lr %.2e | %.2f steps/s %.1f frames/s", step, mean["loss"],
             mean.get("l1", float("nan")), mean["lr"], record["steps_per_s"], record["frames_per_s"])
    if log_path:
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def prune_checkpoints(folder: str, keep: int) -> None:
    """Delete all but the newest `keep` numbered checkpoints (last.pt is never touched)."""
    numbered = sorted(f for f in os.listdir(folder) if f.startswith("step-") and f.endswith(".pt"))
    for name in numbered[: max(0, len(numbered) - keep)]:
        os.remove(os.path.join(folder, name))


__all__ = ["OptimSettings", "TrainSettings", "Trainer", "learning_rate", "reconstruct", "prune_checkpoints"]
