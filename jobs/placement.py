"""Where things run: connecting to Ray and sizing the actor pool and the shard tasks at start.

- Tokenizer actors: `resources.num_actors` (auto = one per GPU in the cluster, or 1 on a
  CPU-only cluster; jobs.pool grows it as GPU nodes join), each with `gpus_per_actor` GPUs
  (auto = 1 where GPUs exist, else 0) and a fractional CPU (`cpus_per_actor`): an actor that
  mostly waits on its GPU leaves the node's CPUs to the decoders.
- Shard tasks: each reserves the `clips.decoder_threads` CPUs its decoder uses (1 by default),
  so Ray packs no more decoders on a node than it has cores; `resources.decode_workers` in
  flight, auto = the shard tasks that fit in the CPUs the actors leave (per node, as the
  cluster changes: jobs.pool).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from jobs.actors import ActorSettings, actor_device
from schemas.jobspec import JobSpec

log = logging.getLogger(__name__)

NAMESPACE = "tokenmill"


@dataclass(frozen=True)
class Placement:
    num_actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    decode_workers: int
    torch_threads: int
    cluster_cpus: float
    cluster_gpus: float


def connect(address: str | None) -> bool:
    """Join the cluster at `address`, or start an embedded local Ray; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
        return False
    # an embedded Ray must not silently join some other cluster through RAY_ADDRESS: the CLI
    # already turned RAY_ADDRESS into `address` when the user meant it
    _embedded_auth_token()
    ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=True)
    return True


def _embedded_auth_token() -> None:
    """Keep token authentication on for the embedded cluster, with a token that lives in this
    process's environment only (inherited by its Ray processes, gone when the run ends).

    Ray 2.60 turns token auth on for a new local cluster and, unless told otherwise, writes a
    token to ~/.ray/auth_token and prints a warning about it. The embedded cluster serves this
    one run, so a per-run token keeps it closed to other local users without writing into the
    home folder. A user who turned auth off (RAY_AUTH_MODE=disabled) or brought a token
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH) keeps their setting."""
    import secrets

    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return
    if "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray reads its settings once, at import: refresh them, as Ray's own token set-up does
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")


def plan_placement(spec: JobSpec) -> Placement:
    """Resolve the `auto` resource settings against the connected cluster."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))
    r = spec.resources
    gpus_per_actor = (1.0 if gpus >= 1 else 0.0) if r.gpus_per_actor == "auto" else float(r.gpus_per_actor)
    if r.num_actors != "auto":
        num_actors = int(r.num_actors)
    elif gpus_per_actor > 0:
        num_actors = max(1, int(gpus // gpus_per_actor))
    else:
        num_actors = 1
    if gpus_per_actor > 0 and num_actors * gpus_per_actor > gpus:
        log.warning("%d actors x %.2f GPUs exceed the cluster's %.0f GPUs: some actors wait for GPUs "
                    "(an autoscaler may add them)", num_actors, gpus_per_actor, gpus)
    spare = {"cluster": cpus - num_actors * r.cpus_per_actor}
    decode = decode_slots(spare, {}, spec.clips.decoder_threads) if r.decode_workers == "auto" else int(r.decode_workers)
    # CPU actors: torch intra-op threads follow the actor's CPU reservation (as Ray's own
    # OMP_NUM_THREADS does). More threads than reserved cores collapses under contention: on a
    # loaded 2-core machine 2 threads ran 7-14x slower than 1 (docs/execution.md); scale with
    # more actors or a larger resources.cpus_per_actor instead
    threads = max(1, int(r.cpus_per_actor)) if gpus_per_actor == 0 else 1
    return Placement(num_actors, gpus_per_actor, r.cpus_per_actor, max(1, decode), threads, cpus, gpus)


def decode_slots(node_cpus: dict[str, float], actor_cpus: dict[str, float], cpus_per_task: float) -> int:
    """Shard tasks that fit beside the actors: per node, (CPUs - actors' CPUs) / CPUs per task."""
    if cpus_per_task <= 0:
        return max(1, math.ceil(sum(node_cpus.values())))
    return sum(max(0, math.floor((cpus - actor_cpus.get(node, 0.0)) / cpus_per_task + 1e-9))
               for node, cpus in node_cpus.items())


def actor_settings(spec: JobSpec, placement: Placement) -> ActorSettings:
    tok = spec.tokenizer
    cuda = actor_device(tok.device, placement.gpus_per_actor) == "cuda"
    return ActorSettings(
        name=tok.name,
        checkpoint=tok.checkpoint,
        init=tok.init,
        dtype=tok.dtype,
        # "auto" is CUDA exactly when the actor reserves a GPU (and fails loudly where torch has
        # no CUDA); a fake-GPU test node must say tokenizer.device: cpu
        device=tok.device,
        num_gpus=placement.gpus_per_actor,
        num_cpus=placement.cpus_per_actor,
        torch_threads=placement.torch_threads,
        # overlap is of copies with GPU compute; a CPU actor has no copy to hide, and torch called
        # from several threads gives each its own OpenMP team (more threads than reserved cores)
        batches_per_actor=spec.resources.batches_per_actor if cuda else 1,
        compile=tok.compile,
        refine_steps=tok.refine_steps,
        tf32=tok.tf32,
        batch_size=None if tok.batch_size == "auto" else int(tok.batch_size),
        clip_shape=(spec.clips.num_frames, *spec.clips.resolution),
    )


class ActorStartError(RuntimeError):
    """No tokenizer actor could be started (model failed to load, or no resources in time)."""
