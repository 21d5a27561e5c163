"""Tokenizer actors: stateless services that turn uint8 clip batches into token ids or latents.

    frames   uint8 [B, T, H, W, 3]   channels-last, as decoded (what crosses the object store)
    video    float [B, 3, T, H, W]   in [-1, 1], built on the actor's device
    encoded  int64 [B, t, h, w]      discrete ids, or float32 [B, c, t, h, w] latents

An actor holds the model and nothing about shards: any actor can serve any batch, and a dead
actor loses no output because the shard task that sent the batch sends it again. `TokenizerWorker`
is a plain class (benchmarks and bench/gpu_check.py use it in-process); `tokenizer_actor_class`
wraps it for Ray, with `batches_per_actor` encode calls at once so transfers overlap compute
(jobs/batch_encoder.py).

An actor that reserves a GPU runs on CUDA or not at all: with a CPU build of torch, or a node
whose GPU torch cannot see, it reports one line saying so instead of tokenizing on one CPU
thread while the GPU sits reserved and idle.
"""

from __future__ import annotations

import logging
import os
import threading
import time
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
    dtype: str  # float32 | bfloat16 | float16 | auto (bfloat16 on CUDA, float32 on CPU)
    device: str  # "auto" | "cpu" | "cuda"
    num_gpus: float
    num_cpus: float
    torch_threads: int  # intra-op threads on CPU; the actor's CPU share would be too few
    batches_per_actor: int = 3  # encode calls in flight (upload / compute / download overlap)
    compile: bool = False  # tokenizer.compile: torch.compile the encode
    tf32: bool = True  # tokenizer.tf32: fp32 on TF32 tensor cores (CUDA)
    refine_steps: int = 0  # tokenizer.refine_steps
    batch_size: int | None = None  # None: tokenizer.batch_size auto, probed at `clip_shape`
    clip_shape: tuple[int, int, int] | None = None  # (T, H, W) of the job's clips


class DeviceUnavailable(RuntimeError):
    """The actor was asked for CUDA (explicitly, or by reserving a GPU) and torch cannot use it."""


def cuda_problem() -> str | None:
    """Why this process cannot run on CUDA (naming the torch build), or None if it can."""
    import torch

    if torch.cuda.is_available():
        return None
    fix = "install a CUDA build of torch, or set tokenizer.device: cpu and resources.gpus_per_actor: 0"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} has no CUDA: {fix}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device{seen}: check the "
            f"node's driver and GPU, or set tokenizer.device: cpu and resources.gpus_per_actor: 0")


def actor_device(requested: str, num_gpus: float) -> str:
    """The device an actor with `num_gpus` GPUs runs on: auto = cuda exactly when it reserves one."""
    if requested == "auto":
        return "cuda" if num_gpus > 0 else "cpu"
    return requested


def resolve_device(requested: str, num_gpus: float = 0.0) -> str:
    """`actor_device`, checked: raises DeviceUnavailable for cuda that torch cannot use."""
    device = actor_device(requested, num_gpus)
    if device == "cuda":
        problem = cuda_problem()
        if problem:
            raise DeviceUnavailable(problem)
    elif num_gpus > 0:
        log.warning("tokenizer.device is cpu but the actor reserves %.2f GPU: that GPU stays idle", num_gpus)
    return device


def resolve_dtype_name(dtype: str, device: str) -> str:
    """tokenizer.dtype: auto -> bfloat16 on CUDA, float32 on CPU."""
    if dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    return dtype


def load_tokenizer(name: str, init: str, device: str, dtype: str, checkpoint: str | None = None) -> Any:
    """Load through tokenizer_core; low-precision dtypes only where the device supports them."""
    import torch

    import tokenizer_core

    torch_dtype = getattr(torch, _TORCH_DTYPES[resolve_dtype_name(dtype, device)])
    if device == "cpu" and torch_dtype == torch.float16:
        # fp16 convolutions are not implemented on CPU for every op; run fp32 instead of failing
        log.warning("tokenizer.dtype=float16 is not supported on CPU; using float32")
        torch_dtype = torch.float32
    return tokenizer_core.from_pretrained(name, device=device, dtype=torch_dtype, init=cast(Any, init),
                                          checkpoint=checkpoint)


class TokenizerWorker:
    """Holds one tokenizer; `encode` is the only call on the data path (thread-safe)."""

    def __init__(self, settings: ActorSettings):
        import torch

        from jobs.batch_encoder import BatchEncoder, EncodeOptions, probe_batch_size

        self.settings = settings
        self.device = resolve_device(settings.device, settings.num_gpus)
        if self.device == "cpu":
            torch.set_num_threads(max(1, settings.torch_threads))
        self.tok = load_tokenizer(settings.name, settings.init, self.device, settings.dtype, settings.checkpoint)
        self.encoder = BatchEncoder(self.tok, EncodeOptions(self.device, max(1, settings.batches_per_actor),
                                                            settings.compile, settings.tf32,
                                                            settings.refine_steps))
        self.batch_size, self.batch_probe = settings.batch_size, None
        if self.batch_size is None:
            self.batch_size, self.batch_probe = probe_batch_size(self.encoder, settings.clip_shape or (17, 256, 256))
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
        result, timing = self.encoder.encode_timed(frames)
        self._account(timing.compute_s, frames.shape, result)
        return result

    def _account(self, busy: float, shape: tuple[int, ...], result: np.ndarray) -> None:
        """`busy`: the batch's compute time on the device (calls overlap, so not their wall time)."""
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
        """Counters since this actor (incarnation) started; busy = seconds the device spent encoding."""
        with self._lock:
            alive = time.monotonic() - self._created
            return {
                "pid": os.getpid(),
                "node_id": _node_id(),
                "device": self.device,
                "dtype": str(self.tok.dtype).removeprefix("torch."),
                "batch_size": self.batch_size,
                "oom_splits": self.encoder.splitter.splits,
                "busy_s": self._busy,
                "alive_s": alive,
                "busy_fraction": min(1.0, self._busy / alive) if alive > 0 else 0.0,
                "batches": self._batches,
                "clips": self._clips,
                "frames": self._frames,
                "tokens": self._tokens,
            }

    def config(self) -> dict[str, Any]:
        return {"config": self.tok.config.to_dict(), "weights_hash": self.tok.weights_hash,
                "batch_size": self.batch_size, "batch_probe": self.batch_probe}

    # ---- quality sampling (quality.sample_rate): decode back, score against the input --------
    def encode_scored(self, frames: np.ndarray, scored: list[bool]) -> tuple[np.ndarray, list[dict[str, float] | None]]:
        """`encode`, plus PSNR/SSIM of the round trip for the clips flagged in `scored`."""
        encoded = self.encode(frames)
        return encoded, [self.round_trip_quality(frames[i], encoded[i]) if flag else None
                         for i, flag in enumerate(scored)]

    def round_trip_quality(self, frames: np.ndarray, encoded: np.ndarray) -> dict[str, float]:
        """One clip: uint8 [T, H, W, 3] and its ids [t, h, w] (or latent [c, t, h, w]) -> psnr, ssim
        on [0, 255] RGB over all frames, exactly as `tokenmill eval` scores a clip."""
        import torch

        from tokenizer_core import metrics

        tokens = torch.from_numpy(np.ascontiguousarray(encoded)[None]).to(self.device)
        if tokens.is_floating_point():
            tokens = tokens.to(self.tok.dtype)
        with self.encoder.compute_lock, torch.inference_mode():
            recon = metrics.to_pixels(self.tok.decode(tokens)[0].cpu())
        original = metrics.from_uint8_frames(torch.as_tensor(np.asarray(frames)))
        return {"psnr": metrics.psnr(original, recon), "ssim": metrics.ssim(original, recon)}

    # ---- whole-video rows (clips.num_frames: all): one causal stream per row, see jobs/rows.py --
    def stream_encode(self, session: str, part: int, frames: np.ndarray, final: bool,
                      score: bool, after: Any = None) -> tuple[np.ndarray, dict[str, float] | None]:
        """Chunk `part` of stream `session`: frames uint8 [1, T, H, W, 3] -> (its ids [1, t', h, w] or
        latents [1, c, t', h, w], psnr/ssim of the whole row on its final chunk when `score`).
        `after` is the previous chunk's result, passed only so that Ray starts this call once that
        one has finished (jobs/rows.py); its value is not used."""
        import torch

        from jobs.rows import StreamTable

        start = time.monotonic()
        if getattr(self, "_streams", None) is None:
            self._streams = StreamTable(self.tok, self.encoder.compute_lock, self.settings.refine_steps)
        with torch.inference_mode():
            video = to_video(frames, self.device, self.tok.dtype)
            result, scores = self._streams.encode(session, part, video, frames, final, score)
        self._account(time.monotonic() - start, frames.shape, result)
        return result, scores

    def stream_close(self, session: str) -> None:
        """Forget stream `session` (its row was dropped or abandoned)."""
        streams = getattr(self, "_streams", None)
        if streams is not None:
            streams.close(session)


def to_video(frames: np.ndarray, device: str, dtype: Any) -> Any:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1] on `device`, scaled in fp32 then cast
    (the same arithmetic as the batch encoder's, so both give the same tokens)."""
    from jobs.batch_encoder import _as_tensor, to_model_input

    return to_model_input(_as_tensor(frames).to(device), dtype)


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

    `encode` runs `batches_per_actor` calls at once (threads; the model's compute is serialised
    inside, the copies overlap it). `stats` runs in its own concurrency group so the driver's
    progress poll is answered while encodes are running.
    """
    import ray

    # whole-video chunks run one at a time in submission order (jobs/rows.py): no thread of the
    # pool ever waits for a predecessor that has no thread to run on
    groups = {"stats": "control", "config": "control", "pid": "control",
              "stream_encode": "streams", "stream_close": "streams"}
    for name, group in groups.items():
        method = getattr(_RayTokenizerWorker, name)
        if not hasattr(method, "__ray_concurrency_group__"):
            setattr(_RayTokenizerWorker, name, ray.method(concurrency_group=group)(method))
    options: dict[str, Any] = {
        "num_cpus": settings.num_cpus,
        "num_gpus": settings.num_gpus,
        "max_restarts": -1,  # a dead actor comes back; callers resend the batch it lost
        "max_task_retries": 0,  # resending is the caller's job: it may pick another, live actor
        "max_concurrency": max(1, settings.batches_per_actor),
        "concurrency_groups": {"control": 1, "streams": 1},
    }
    return ray.remote(**options)(_RayTokenizerWorker)


class _RayTokenizerWorker(TokenizerWorker):
    """Same worker; `stats`/`config`/`pid` answered from the control concurrency group.

    A device the actor cannot use is not raised from `__init__` (Ray would print the creation
    task's traceback on the driver's terminal): the actor stays up, `stats` carries the one-line
    reason as `start_error` (the driver stops the job with it) and `encode` refuses to run.
    """

    def __init__(self, settings: ActorSettings):
        self.start_error: str | None = None
        try:
            super().__init__(settings)
        except DeviceUnavailable as exc:
            self.start_error = str(exc)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        if self.start_error is not None:
            raise DeviceUnavailable(self.start_error)
        return super().encode(frames)

    def stats(self) -> dict[str, Any]:
        if self.start_error is not None:
            return {"pid": os.getpid(), "node_id": _node_id(), "start_error": self.start_error}
        return super().stats()

    def config(self) -> dict[str, Any]:
        return super().config()

    def pid(self) -> int:
        return os.getpid()
