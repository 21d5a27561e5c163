"""Batch encoding on the actor's device: pinned buffers, copy streams, overlap, OOM splitting.

    frames   uint8 [B, T, H, W, 3]   host, as decoded (what crosses the object store)
    video    dtype [B, 3, T, H, W]   on the device, in [-1, 1]; NDHWC strides (channels-last)
    encoded  int64 [B, t, h, w] ids, or float32 [B, c, t, h, w] latents, returned as numpy

One `BatchEncoder.encode` call runs three steps, each on its own CUDA stream:

    upload    frames -> a reusable pinned host buffer -> device          (upload stream)
    compute   uint8 -> [-1, 1] in the model's dtype, then the model      (compute stream)
    download  result -> a reusable pinned host buffer -> numpy           (download stream)

Up to `depth` calls run at once from different threads (the Ray actor's `max_concurrency`, or
`map` in-process); only the compute step is serialised. So while batch n computes, batch n+1
uploads and batch n-1 downloads. On CPU the streams are `nullcontext`s, the events None and
the buffers plain memory: the same code runs, so its ordering and results are tested there.

The host side of the compute step only queues kernels on CUDA, so the compute lock is held for
the launch, not for the GPU's work. Tensors made on one stream and used on another are marked
with `record_stream` so the caching allocator does not hand their memory out too early.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

AUTO_CPU_BATCH = 4  # tokenizer.batch_size: auto on CPU (no memory probe: RAM is rarely the limit)
PROBE_HEADROOM = 0.2  # share of free GPU memory the probe leaves unused (allocator, cuDNN workspaces)
MAX_AUTO_BATCH = 32  # frames of a batch cross the object store: 32 x 17x256x256 RGB is 107 MB


@dataclass(frozen=True)
class EncodeOptions:
    device: str  # resolved: "cpu" | "cuda"
    depth: int = 3  # batches in flight (one computing, the others uploading / downloading)
    compile: bool = False  # torch.compile the model's encode
    tf32: bool = True  # fp32 convolutions and matmuls on TF32 tensor cores (CUDA only)
    refine_steps: int = 0  # tokenizer.refine_steps: latent refinement against the decoder (not compiled)


def configure_cuda(tf32: bool) -> None:
    """cuDNN picks the fastest convolution per shape (shapes repeat: one per batch size)."""
    torch.backends.cudnn.benchmark = True
    mode = "tf32" if tf32 else "ieee"
    try:  # torch >= 2.9; the older flags below are deprecated there
        torch.backends.cudnn.conv.fp32_precision = mode  # type: ignore[attr-defined]
        torch.backends.cuda.matmul.fp32_precision = mode  # type: ignore[attr-defined]
    except AttributeError:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32


class _Streams:
    """Three CUDA streams and their events; no-ops on CPU (so one code path serves both)."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.upload: Any
        self.compute: Any
        self.download: Any
        self.upload, self.compute, self.download = (
            (torch.cuda.Stream(), torch.cuda.Stream(), torch.cuda.Stream()) if self.cuda else (None, None, None))

    def on(self, stream: Any) -> AbstractContextManager[Any]:
        return torch.cuda.stream(stream) if stream is not None else nullcontext()

    def record(self, stream: Any, timing: bool = False) -> Any:
        if stream is None:
            return None
        event = torch.cuda.Event(enable_timing=timing)
        event.record(stream)
        return event

    def wait(self, stream: Any, event: Any, tensor: torch.Tensor | None = None) -> None:
        """`stream` waits for `event`; `tensor` (made on another stream) is now also used on `stream`."""
        if stream is None:
            return
        stream.wait_event(event)
        if tensor is not None:
            tensor.record_stream(stream)


class HostBuffers:
    """Reusable host buffers (pinned on CUDA), one free list per per-clip shape and dtype.

    A buffer holds `capacity` clips and is lent as a view of the first B: a shard's last, smaller
    batch reuses the same buffer. Pinned allocation is slow (page locking), hence the reuse.
    """

    def __init__(self, pinned: bool):
        self.pinned = pinned
        self._free: dict[tuple[Any, ...], list[torch.Tensor]] = {}
        self._capacity: dict[tuple[Any, ...], int] = {}  # the largest batch seen: what new buffers hold
        self._lock = threading.Lock()
        self.allocated = 0

    @contextmanager
    def take(self, batch: int, item_shape: tuple[int, ...], dtype: torch.dtype) -> Iterator[torch.Tensor]:
        key = (tuple(item_shape), dtype)
        with self._lock:
            free = self._free.setdefault(key, [])
            fitting = [i for i, b in enumerate(free) if b.shape[0] >= batch]
            buf = free.pop(fitting[0]) if fitting else None
            if buf is None and free:
                free.pop()  # too small for this batch: replaced, so the pool never outgrows the calls in flight
            capacity = self._capacity[key] = max(batch, self._capacity.get(key, 0))
        if buf is None:
            buf = torch.empty((capacity, *item_shape), dtype=dtype, pin_memory=self.pinned)
            self.allocated += 1
        try:
            yield buf[:batch]
        finally:
            with self._lock:
                self._free[key].append(buf)


class OomSplitter:
    """Runs `fn` on a batch; on a CUDA out-of-memory error, on its halves, down to one clip.

    The largest batch that fitted becomes a limit: later batches are cut to it before trying.
    One clip that does not fit re-raises the error (the exactly-once layer classifies it).
    """

    def __init__(self) -> None:
        self.limit: int | None = None
        self.splits = 0

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and x.shape[0] > self.limit:
            return torch.cat([self(fn, part) for part in x.split(self.limit)])
        try:
            return fn(x)
        except torch.cuda.OutOfMemoryError:
            if x.shape[0] <= 1:
                raise
        # outside the except block: the failed attempt's traceback (and its tensors) is gone
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = (x.shape[0] + 1) // 2
        self.limit = half if self.limit is None else min(self.limit, half)
        self.splits += 1
        log.warning("CUDA out of memory at batch %d; splitting (at most %d clips per call from now on)",
                    x.shape[0], self.limit)
        return torch.cat([self(fn, x[:half]), self(fn, x[half:])])


@dataclass
class BatchTiming:
    compute_s: float  # time the compute step occupied the device (CUDA events; wall clock on CPU)
    wall_s: float  # the whole call, upload to numpy
    frames: int  # B * T of the batch


class BatchEncoder:
    """Encodes uint8 clip batches on `options.device` with transfer/compute overlap (see module doc)."""

    def __init__(self, tok: Any, options: EncodeOptions):
        self.tok = tok
        self.options = options
        self.device = options.device
        if self.device == "cuda":
            configure_cuda(options.tf32)
        self.streams = _Streams(self.device)
        pinned = self.device == "cuda"
        self.inputs, self.outputs = HostBuffers(pinned), HostBuffers(pinned)
        self.splitter = OomSplitter()
        self._compute_lock = threading.Lock()
        self._model_encode: Callable[[torch.Tensor], torch.Tensor] = tok.encode
        if options.refine_steps:
            self._model_encode = functools.partial(tok.encode, refine_steps=options.refine_steps)
        elif options.compile:
            self._model_encode = torch.compile(tok.encode)

    @property
    def compute_lock(self) -> threading.Lock:
        """Held while the model computes; other users of the same model (whole-video streams,
        decode-back for quality) take it too, so one computation runs at a time."""
        return self._compute_lock

    def _normalise_and_encode(self, x: torch.Tensor) -> torch.Tensor:
        video = to_model_input(x, self.tok.dtype)
        out = self._model_encode(video)
        return out if out.dtype == torch.int64 else out.float()

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """frames uint8 [B, T, H, W, 3] -> ids int64 [B, t, h, w] or latents float32 [B, c, t, h, w]."""
        return self.encode_timed(frames)[0]

    def encode_timed(self, frames: np.ndarray) -> tuple[np.ndarray, BatchTiming]:
        start = time.perf_counter()
        s = self.streams
        with torch.inference_mode(), self.inputs.take(frames.shape[0], frames.shape[1:], torch.uint8) as host:
            host.copy_(_as_tensor(frames))  # in this thread: overlaps other batches' compute
            with s.on(s.upload):
                x = host.to(self.device, non_blocking=True)
                uploaded = s.record(s.upload)
            with self._compute_lock, s.on(s.compute):
                s.wait(s.compute, uploaded, x if s.cuda else None)
                began = s.record(s.compute, timing=True)
                cpu_began = time.perf_counter()
                out = self.splitter(self._normalise_and_encode, x)
                cpu_compute = time.perf_counter() - cpu_began
                computed = s.record(s.compute, timing=True)
            result = self._download(out, computed)
        compute_s = began.elapsed_time(computed) / 1000.0 if s.cuda else cpu_compute
        return result, BatchTiming(compute_s, time.perf_counter() - start, int(frames.shape[0] * frames.shape[1]))

    def _download(self, out: torch.Tensor, computed: Any) -> np.ndarray:
        s = self.streams
        with self.outputs.take(out.shape[0], tuple(out.shape[1:]), out.dtype) as dest, s.on(s.download):
            s.wait(s.download, computed, out if s.cuda else None)
            dest.copy_(out, non_blocking=True)
            if s.cuda:
                s.record(s.download).synchronize()  # releases the GIL while the copy runs
            return dest.numpy().copy()  # the pinned buffer goes back to the pool

    def map(self, batches: Iterable[np.ndarray], depth: int | None = None) -> Iterator[np.ndarray]:
        """Encode `batches` with up to `depth` in flight; results in input order."""
        for result, _ in self.map_timed(batches, depth):
            yield result

    def map_timed(self, batches: Iterable[np.ndarray],
                  depth: int | None = None) -> Iterator[tuple[np.ndarray, BatchTiming]]:
        depth = depth or self.options.depth
        pending: list[Future[tuple[np.ndarray, BatchTiming]]] = []
        with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="encode") as pool:
            for frames in batches:
                pending.append(pool.submit(self.encode_timed, frames))
                if len(pending) >= depth:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()


def to_model_input(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> [B, 3, T, H, W] in [-1, 1]: the permuted view keeps NDHWC strides
    (channels-last); scaled in fp32, then cast (bf16 arithmetic on pixel values would add its own
    rounding). Every path into the model uses this, so all give the same tokens."""
    return x.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0).to(dtype)


def _as_tensor(frames: np.ndarray) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        # arrays from Ray's object store are read-only; they are only read (copied into the buffer)
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(frames))


def batch_from_probe(peak_1: int, peak_2: int, free: int, clip_bytes: int, depth: int,
                     headroom: float = PROBE_HEADROOM, cap: int = MAX_AUTO_BATCH) -> int:
    """Largest batch whose predicted peak fits the free memory, less `headroom`.

    Peak memory is linear in the batch: peak(B) = fixed + B * per_clip, measured at B = 1 and 2.
    The other `depth - 1` batches in flight hold their uploaded frames (uint8) on the device too.
    """
    per_clip = max(peak_2 - peak_1, 1)
    fixed = max(peak_1 - per_clip, 0)
    budget = free * (1.0 - headroom) - fixed
    return int(max(1, min(cap, budget // (per_clip + (depth - 1) * clip_bytes))))


def probe_batch_size(encoder: BatchEncoder, clip_shape: tuple[int, int, int]) -> tuple[int, dict[str, Any]]:
    """tokenizer.batch_size: auto. On CUDA, encode 1 and 2 clips of `clip_shape` (T, H, W) and size
    the batch from the peaks (`batch_from_probe`); on CPU, the fixed AUTO_CPU_BATCH."""
    if encoder.device != "cuda":
        return AUTO_CPU_BATCH, {"device": encoder.device, "batch_size": AUTO_CPU_BATCH, "probed": False}
    t, h, w = clip_shape
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    free, _total = torch.cuda.mem_get_info()
    peaks = []
    for b in (1, 2):
        torch.cuda.reset_peak_memory_stats()
        encoder.encode(np.zeros((b, t, h, w, 3), dtype=np.uint8))
        peaks.append(torch.cuda.max_memory_allocated() - base)
    torch.cuda.empty_cache()
    batch = batch_from_probe(peaks[0], peaks[1], free, t * h * w * 3, encoder.options.depth)
    info: dict[str, Any] = {"device": "cuda", "batch_size": batch, "probed": True, "clip_shape": [t, h, w],
            "peak_mib": [p / 2**20 for p in peaks], "free_mib": free / 2**20, "headroom": PROBE_HEADROOM}
    log.info("tokenizer.batch_size auto: %d clips of %dx%dx%d (peak %.0f MiB at 1 clip, %.0f MiB at 2; "
             "%.0f MiB free; %.0f%% headroom)", batch, t, h, w, info["peak_mib"][0], info["peak_mib"][1],
             info["free_mib"], 100 * PROBE_HEADROOM)
    return batch, info
