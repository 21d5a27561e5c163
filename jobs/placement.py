"""Where things run: connecting to Ray, sizing the actor pool and the shard tasks, starting actors.

- Tokenizer actors: `resources.num_actors` (auto = one per GPU in the cluster, or 1 on a
  CPU-only cluster), each with `gpus_per_actor` GPUs (auto = 1 where GPUs exist, else 0) and a
  fractional CPU, so shard tasks are never starved of CPU by actors that mostly wait on a GPU.
- Shard tasks: `resources.decode_workers` in flight (auto = the cluster's CPUs not reserved by
  actors, rounded up); each reserves the `clips.decoder_threads` CPUs its decoder uses (1 by
  default), so Ray packs no more decoders on a node than it has cores (with Ray 2.60, a Ray
  Data actor pool whose actors hold every CPU hangs forever waiting for its read task's CPU;
  fractional actor CPUs avoid it).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from jobs.actors import ActorSettings, actor_device, tokenizer_actor_class
from jobs.dispatch import describe_failure
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
    spare = max(1.0, cpus - num_actors * r.cpus_per_actor)
    decode = math.ceil(spare) if r.decode_workers == "auto" else int(r.decode_workers)
    # CPU actors: torch intra-op threads follow the actor's CPU reservation (as Ray's own
    # OMP_NUM_THREADS does). More threads than reserved cores collapses under contention: on a
    # loaded 2-core machine 2 threads ran 7-14x slower than 1 (docs/execution.md); scale with
    # more actors or a larger resources.cpus_per_actor instead
    threads = max(1, int(r.cpus_per_actor)) if gpus_per_actor == 0 else 1
    return Placement(num_actors, gpus_per_actor, r.cpus_per_actor, max(1, decode), threads, cpus, gpus)


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
        tf32=tok.tf32,
        batch_size=None if tok.batch_size == "auto" else int(tok.batch_size),
        clip_shape=(spec.clips.num_frames, *spec.clips.resolution),
    )


def start_actors(settings: ActorSettings, count: int, job_tag: str) -> list[Any]:
    """Start `count` named tokenizer actors (names let operators and tests find them)."""
    cls = tokenizer_actor_class(settings)
    return [cls.options(name=f"tokenizer-{job_tag}-{i}", namespace=NAMESPACE).remote(settings) for i in range(count)]


class ActorStartError(RuntimeError):
    """No tokenizer actor could be started (model failed to load, or no resources in time)."""


def wait_for_actors(actors: list[Any], first_timeout: float = 1800.0,
                    others_timeout: float = 10.0) -> list[dict[str, Any] | None]:
    """Wait until the first actor has loaded its model; returns each actor's stats (None: not up yet).

    Actors still waiting for resources (an autoscaler adding GPU nodes) do not hold the job up:
    batches sent to them queue until they start; their stats (node, batch size) are unknown
    meanwhile. An actor that cannot use its device stops the job with its one-line reason.
    """
    import ray
    from ray.exceptions import RayActorError

    refs = [a.stats.remote() for a in actors]
    ready, _ = ray.wait(refs, num_returns=1, timeout=first_timeout)
    if not ready:
        raise ActorStartError(f"no tokenizer actor started within {first_timeout:.0f} s: the cluster lacks "
                              "the CPUs/GPUs they ask for (see resources.* in the spec)")
    ray.wait(refs, num_returns=len(refs), timeout=others_timeout)
    stats: list[dict[str, Any] | None] = []
    for ref in refs:
        try:
            st = ray.get(ref, timeout=0)
        except RayActorError as exc:
            raise ActorStartError(f"tokenizer actor failed to start: {describe_failure(exc)}") from exc
        except ray.exceptions.GetTimeoutError:
            st = None
        if st is not None and st.get("start_error"):
            raise ActorStartError(f"tokenizer actor failed to start: {st['start_error']}")
        stats.append(st)
    return stats
