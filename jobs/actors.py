"""Tokenizer actors: stateless services that turn uint8 clip batches into token ids or latents.

    frames   uint8 [B, T, H, W, 3]   channels-last, as decoded (what crosses the object store)
    video    float [B, 3, T, H, W]   in [-1, 1], built on the actor's device
    encoded  int64 [B, t, h, w]      discrete ids, or float32 [B, c, t, h, w] latents

An actor holds the model and nothing about shards: any actor can serve any batch, and a dead
actor loses no output because the shard task that sent the batch sends it again. `TokenizerWorker`
is a plain class (benchmarks use it in-process); `tokenizer_actor_class` wraps it for Ray.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

log = logging.getLogger(__name__)

_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass(frozen=True)
class ActorSettings:
    """How to build one tokenizer actor (plain data, sent from the driver)."""

    name: str  # preset or bundled name (or a path to a checkpoint / official folder)
    checkpoint: str | None  # tokenizer.checkpoint: weights for the preset `name`
    init: str  # "pretrained" | "random"
    dtype: str  # float32 | bfloat16 | float16
    device: str  # "auto" | "cpu" | "cuda"
    num_gpus: float
    num_cpus: float
    torch_threads: int  # intra-op threads on CPU; the actor's CPU share would be too few


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def load_tokenizer(name: str, init: str, device: str, dtype: str, checkpoint: str | None = None) -> Any:
    """Load through tokenizer_core; low-precision dtypes only where the device supports them."""
    import torch

    import tokenizer_core

    torch_dtype = getattr(torch, _TORCH_DTYPES[dtype])
    if device == "cpu" and torch_dtype == torch.float16:
        # fp16 convolutions are not implemented on CPU for every op; run fp32 instead of failing
        log.warning("tokenizer.dtype=float16 is not supported on CPU; using float32")
        torch_dtype = torch.float32
    return tokenizer_core.from_pretrained(name, device=device, dtype=torch_dtype, init=cast(Any, init),
                                          checkpoint=checkpoint)


class TokenizerWorker:
    """Holds one tokenizer; `encode` is the only call on the data path."""

    def __init__(self, settings: ActorSettings):
        import torch

        self.settings = settings
        self.device = resolve_device(settings.device)
        if self.device == "cpu":
            torch.set_num_threads(max(1, settings.torch_threads))
        self.tok = load_tokenizer(settings.name, settings.init, self.device, settings.dtype, settings.checkpoint)
        self._lock = threading.Lock()  # guards the counters read by `stats` from another thread
        self._created = time.monotonic()
        self._busy = 0.0
        self._batches = 0
        self._clips = 0
        self._frames = 0
        self._tokens = 0
        self._metrics = _actor_metrics()

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """frames uint8 [B, T, H, W, 3] -> ids int64 [B, t, h, w] or latents float32 [B, c, t, h, w]."""
        import torch

        start = time.monotonic()
        with warnings.catch_warnings():
            # arrays from Ray's object store are read-only; we only read them (the float copy
            # below is a new tensor), so torch's non-writable warning does not apply
            warnings.simplefilter("ignore", UserWarning)
            host = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device == "cuda":
            # pinned memory lets the copy overlap with work already queued on the GPU
            host = host.pin_memory()
        with torch.inference_mode():
            x = host.to(self.device, non_blocking=True)
            # uint8 -> [-1, 1] on the device: [B,T,H,W,3] -> [B,3,T,H,W]; scaled in fp32, then cast
            # to the model's dtype (bf16 arithmetic on the pixel values would add its own rounding)
            video = x.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0).to(self.tok.dtype)
            out = self.tok.encode(video)
            result = out.cpu().numpy() if out.dtype == torch.int64 else out.float().cpu().numpy()
        self._account(start, frames.shape, result)
        return result

    def _account(self, start: float, shape: tuple[int, ...], result: np.ndarray) -> None:
        busy = time.monotonic() - start
        tokens = int(result.size) if self.tok.config.discrete else int(result[0, 0].size * shape[0])
        with self._lock:
            self._busy += busy
            self._batches += 1
            self._clips += int(shape[0])
            self._frames += int(shape[0] * shape[1])
            self._tokens += tokens
        if self._metrics is not None:
            busy_s, clips_c, frames_c, tokens_c = self._metrics
            busy_s.inc(busy)
            clips_c.inc(int(shape[0]))
            frames_c.inc(int(shape[0] * shape[1]))
            tokens_c.inc(tokens)

    def stats(self) -> dict[str, Any]:
        """Counters since this actor (incarnation) started; busy = seconds spent in encode."""
        with self._lock:
            alive = time.monotonic() - self._created
            return {
                "pid": os.getpid(),
                "node_id": _node_id(),
                "device": self.device,
                "busy_s": self._busy,
                "alive_s": alive,
                "busy_fraction": self._busy / alive if alive > 0 else 0.0,
                "batches": self._batches,
                "clips": self._clips,
                "frames": self._frames,
                "tokens": self._tokens,
            }

    def config(self) -> dict[str, Any]:
        return {"config": self.tok.config.to_dict(), "weights_hash": self.tok.weights_hash}


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - node id is informational only
        return None


def _actor_metrics() -> tuple[Any, Any, Any, Any] | None:
    """Ray (Prometheus) counters, exported by each actor; None outside a Ray worker."""
    try:
        import ray
        from ray.util.metrics import Counter

        if not ray.is_initialized():
            return None
    except ImportError:
        return None
    return (
        Counter("tokenmill_actor_busy_seconds", "seconds tokenizer actors spent encoding"),
        Counter("tokenmill_clips_encoded", "clips encoded by tokenizer actors"),
        Counter("tokenmill_frames_encoded", "frames encoded by tokenizer actors"),
        Counter("tokenmill_tokens_encoded", "token positions produced by tokenizer actors"),
    )


def tokenizer_actor_class(settings: ActorSettings) -> Any:
    """The Ray actor class for `settings`: restarts on death; control calls never wait on encode.

    `stats` runs in its own concurrency group so the driver's progress poll is answered while a
    long encode is running; `encode` stays one-at-a-time per actor (one model, one device).
    """
    import ray

    for name in ("stats", "config", "pid"):
        method = getattr(_RayTokenizerWorker, name)
        if not hasattr(method, "__ray_concurrency_group__"):
            setattr(_RayTokenizerWorker, name, ray.method(concurrency_group="control")(method))
    options: dict[str, Any] = {
        "num_cpus": settings.num_cpus,
        "num_gpus": settings.num_gpus,
        "max_restarts": -1,  # a dead actor comes back; callers resend the batch it lost
        "max_task_retries": 0,  # resending is the caller's job: it may pick another, live actor
        "concurrency_groups": {"control": 1},
    }
    return ray.remote(**options)(_RayTokenizerWorker)


class _RayTokenizerWorker(TokenizerWorker):
    """Same worker; `stats`/`config`/`pid` answered from the control concurrency group."""

    def stats(self) -> dict[str, Any]:
        return super().stats()

    def config(self) -> dict[str, Any]:
        return super().config()

    def pid(self) -> int:
        return os.getpid()
