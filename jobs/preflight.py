"""Before anything is written: the tokenizer a job names, checked on the driver.

    pin_hub_refs      Hub repo ids pinned to the commit they resolve to now
    probe_tokenizer   the tokenizer loaded once (CPU) for its config and weights hash
    check_clip_shape  clips fit its grid (T = 1 + k*t, sides multiples of the spatial factor)
    resolve_device    where the actors run and `tokenizer.dtype: auto` resolved from it

Every problem is a SpecError naming the field, so `tokenmill run` exits 2 with nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.config import SpecError
from schemas.jobspec import JobSpec


@dataclass(frozen=True)
class TokenizerInfo:
    config: dict[str, Any]
    weights_hash: str
    name: str
    discrete: bool
    spatial: int
    temporal: int
    load_name: str  # what the actors load: the spec's tokenizer.name, a Hub repo id pinned
    load_checkpoint: str | None  # the spec's tokenizer.checkpoint, a Hub repo id pinned
    revision: str | None = None  # "owner/name@commit" when the weights come from the Hub
    streams: bool = True  # has encode_chunk (the native module): clips.num_frames: all works


def pin_hub_refs(name: str, checkpoint: str | None) -> tuple[str, str | None, str | None]:
    """(name, checkpoint, revision): Hub repo ids among them pinned to the commit their revision
    resolves to now (its files fetched here), so every actor loads exactly these files even if
    the repo moves during the job; revision is the weights' "owner/name@commit", or None."""
    from schemas.hubref import HUB_SCHEME, hub_ref_for
    from tokenizer_core import hub

    values: list[str | None] = [name, checkpoint]
    revision = None
    for i, value in enumerate(values):
        ref = hub_ref_for(value) if value else None
        if ref is not None:
            pinned = str(hub.fetch(ref).pinned)
            values[i], revision = HUB_SCHEME + pinned, pinned  # the checkpoint's, if both are
    return str(values[0]), values[1], revision


def probe_tokenizer(spec: JobSpec) -> TokenizerInfo:
    """Load the tokenizer once on the driver (CPU) for its config and weights hash."""
    from jobs.actors import load_tokenizer
    from tokenizer_core.model import refine_problem

    tok_spec = spec.tokenizer
    try:
        name, checkpoint, revision = pin_hub_refs(tok_spec.name, tok_spec.checkpoint)
        tok = load_tokenizer(name, tok_spec.init, "cpu", "float32", checkpoint)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        field_name = "tokenizer.checkpoint" if tok_spec.checkpoint else "tokenizer.name"
        raise SpecError(field_name, f"cannot load tokenizer: {exc}") from exc
    cfg = tok.config
    if tok_spec.refine_steps and (problem := refine_problem(tok)):
        raise SpecError("tokenizer.refine_steps", problem)
    return TokenizerInfo(cfg.to_dict(), tok.weights_hash, cfg.name, bool(cfg.discrete),
                         int(cfg.spatial_compression), int(cfg.temporal_compression), name, checkpoint, revision,
                         hasattr(tok, "encode_chunk") and bool(cfg.video))


def check_clip_shape(spec: JobSpec, info: TokenizerInfo) -> None:
    """Clips must fit the tokenizer's grid: T = 1 + k*t, H and W multiples of the spatial factor."""
    from schemas.jobspec import ShortSide

    n, t, s = spec.clips.num_frames, info.temporal, info.spatial
    if n != "all" and (n - 1) % t != 0:
        raise SpecError("clips.num_frames", f"must be 1 + k*{t} for tokenizer {info.name} "
                                            f"(e.g. {1 + t}, {1 + 2 * t}, {1 + 4 * t}), got {n}")
    if n == "all" and not info.streams:
        raise SpecError("clips.num_frames", f"all needs a video tokenizer with streaming (the native module); "
                                            f"{info.name} has none")
    if n == "all" and spec.clips.chunk_frames % t:
        raise SpecError("clips.chunk_frames", f"must be a multiple of {t}, the temporal compression "
                                              f"of tokenizer {info.name}, got {spec.clips.chunk_frames}")
    res = spec.clips.resolution
    if isinstance(res, ShortSide):
        for name, side in (("short_side", res.short_side), ("max_long_side", res.max_long_side)):
            if side is not None and side % s:
                raise SpecError(f"clips.resolution.{name}", f"{side} must be a multiple of {s}, the "
                                                            f"spatial compression of tokenizer {info.name}")
        return
    h, w = res
    if h % s or w % s:
        raise SpecError("clips.resolution", f"[{h}, {w}] must be multiples of {s}, the spatial "
                                            f"compression of tokenizer {info.name}")


def _cluster_gpus(address: str | None) -> float:
    """GPUs the actors could reserve: the cluster's (connecting to it), or this machine's for an
    embedded Ray (as torch counts them: a CPU build of torch counts none)."""
    if address is None:
        import torch

        return float(torch.cuda.device_count()) if torch.cuda.is_available() else 0.0
    import ray

    from jobs import placement as pl

    pl.connect(address)
    return float(ray.cluster_resources().get("GPU", 0.0))


def resolve_device(spec: JobSpec, address: str | None) -> JobSpec:
    """Decide where the actors run (CUDA exactly when they reserve a GPU) and resolve
    `tokenizer.dtype: auto` from it (bfloat16 on CUDA, float32 on CPU), before the fingerprint
    records the dtype. A request this machine's torch cannot meet is refused here, before
    anything is written, when the actors run on this machine (embedded Ray); on a cluster the
    actors' nodes decide, and an actor that cannot use CUDA stops the job when it starts."""
    from jobs.actors import actor_device, cuda_problem, resolve_dtype_name

    tok, res = spec.tokenizer, spec.resources
    if tok.device == "cuda" and res.gpus_per_actor == 0:
        raise SpecError("tokenizer.device", "cuda needs a GPU per actor, but resources.gpus_per_actor is 0 "
                                            "(set it to auto or > 0, or tokenizer.device: cpu)")
    device: str = tok.device
    if device == "auto" and (tok.dtype == "auto" or address is None):
        gpus = res.gpus_per_actor if res.gpus_per_actor != "auto" else min(1.0, _cluster_gpus(address))
        device = actor_device("auto", gpus)
    if address is None and device == "cuda":
        problem = cuda_problem()
        if problem:
            raise SpecError("tokenizer.device", problem)
    if tok.dtype != "auto":
        return spec
    dtype = resolve_dtype_name(tok.dtype, device)
    return spec.model_copy(update={"tokenizer": tok.model_copy(update={"dtype": dtype})})
