"""The tokenizer actor pool of a running job, following the cluster as nodes join and leave.

    pool = ActorPool(settings, spec.resources, placement, tag)
    pool.start()                  # initial actors; returns once the first has loaded its model
    pool.refresh()                # from the driver loop: throttled to one look every REFRESH_S
    pool.roster_ref, pool.registry  # what each shard task is handed
    pool.close()

Ray does the placing: a new actor asks for `gpus_per_actor` GPUs and Ray puts it on a node that
has them. The pool only decides how many to ask for: while `resources.num_actors` is `auto`
(and actors use GPUs), one more whenever the cluster has a GPU free and no actor of ours is
still waiting for one, up to `resources.max_actors`. With `max_actors` set, the pool also asks
an autoscaler for that many actors' resources (`ray.autoscaler.sdk.request_resources`, a no-op
without one) and withdraws the request at the end.

An actor is in the roster (what shard tasks send batches to) while it answers its `stats` ping
(answered from its control group, even mid-encode): a new actor joins once its model is loaded;
an actor whose node left drops out until Ray has restarted it elsewhere (it keeps
`max_restarts=-1`, so a replacement node brings it back). Shard tasks get the roster with each
hand-out and ask the job's roster registry (a named actor holding the latest roster) for a newer
one every few seconds, so a shard that is already running also uses new actors.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.actors import ActorSettings, tokenizer_actor_class
from jobs.dispatch import describe_failure
from jobs.placement import NAMESPACE, ActorStartError, Placement, decode_slots
from schemas.jobspec import ResourceSpec

log = logging.getLogger(__name__)

REFRESH_S = 2.0  # how often the driver looks at the cluster and pings the actors
OTHERS_S = 30.0  # at start, how long the first ready actor waits for the others
# shard tasks ask the registry (one actor) for a newer roster every 5 s, or less often when so
# many run that their questions would pass this rate
ROSTER_REFRESH_S = 5.0
REGISTRY_CALLS_PER_S = 500.0
STALE_S = 20.0  # a ping unanswered this long takes the actor out of the roster
UNLIMITED = 1 << 30


@dataclass(frozen=True)
class Roster:
    """The actors shard tasks may send batches to: (name, handle, node id) of each ready one,
    and how often a running shard task should ask the registry for a newer roster."""

    version: int
    members: tuple[tuple[str, Any, str], ...]
    refresh_s: float = 5.0
    made_by: tuple[tuple[str, str, str], ...] = ()  # (name, device, dtype) of each member, for records


class RosterRegistry:
    """Holds the job's latest roster for shard tasks to pick up (a named Ray actor, no CPU)."""

    def __init__(self) -> None:
        self.roster: Roster | None = None

    def publish(self, roster: Roster) -> None:
        self.roster = roster

    def newer(self, version: int) -> Roster | None:
        return self.roster if self.roster is not None and self.roster.version > version else None


@dataclass
class _Member:
    name: str
    handle: Any
    node: str | None = None  # from its last answered ping
    ping: Any = None  # outstanding `stats` call
    sent: float = 0.0
    answered: bool = False  # the last ping came back (the model is loaded, the actor is alive)
    stats: dict[str, Any] = field(default_factory=dict)


class ActorPool:
    def __init__(self, settings: ActorSettings, resources: ResourceSpec, placement: Placement, tag: str,
                 cpus_per_task: float):
        self.settings, self.placement, self.tag = settings, placement, tag
        self.follow = resources.num_actors == "auto" and placement.gpus_per_actor > 0
        self.limit = UNLIMITED if resources.max_actors == "auto" else int(resources.max_actors)
        self.auto_decode = resources.decode_workers == "auto"
        self.cpus_per_task = cpus_per_task  # what a shard task reserves (clips.decoder_threads)
        self.members: list[_Member] = []
        self.handles: list[Any] = []  # every actor ever started, in order (progress polls these)
        self.roster_ref: Any = None
        self.registry: Any = None
        self.decode_slots = placement.decode_workers
        self.node_cpus: dict[str, float] = {}  # alive node -> CPUs it advertises
        self.node_gpus: dict[str, float] = {}
        self._cls = tokenizer_actor_class(settings)
        self._version = 0
        self._members_key: tuple[tuple[str, str], ...] = ()
        self._last = 0.0

    # ---- life cycle -------------------------------------------------------------------------
    def start(self, first_timeout: float = 1800.0) -> None:
        """Start the initial actors and the registry; return once one actor has loaded its model."""
        import ray

        self.registry = ray.remote(num_cpus=0)(RosterRegistry).options(
            name=f"tokenmill-roster-{self.tag}", namespace=NAMESPACE).remote()
        for _ in range(min(self.limit, self.placement.num_actors)):
            self._add()
        self._ask_autoscaler(self.limit if self.follow and self.limit < UNLIMITED else 0)
        deadline = time.monotonic() + first_timeout
        while not any(m.answered for m in self.members):
            if time.monotonic() > deadline:
                raise ActorStartError(f"no tokenizer actor started within {first_timeout:.0f} s: the cluster "
                                      "lacks the CPUs/GPUs they ask for (see resources.* in the spec)")
            errors = self._ping(wait=1.0)
            if errors:  # a model that fails to load fails the same way on every actor
                first = errors[0]
                reason = str(first) if isinstance(first, ActorStartError) else describe_failure(first)
                raise ActorStartError(f"tokenizer actor failed to start: {reason}") from first
        # the others load their models at the same time: a short wait lets the first shard tasks
        # find an actor on their own node instead of sending frames to the first one ready
        others = time.monotonic() + OTHERS_S
        while not all(m.answered for m in self.members) and time.monotonic() < others:
            self._ping(wait=1.0)
        self.refresh(force=True)

    def close(self) -> None:
        import ray

        self._ask_autoscaler(0)
        for handle in [*self.handles, self.registry]:
            if handle is not None:
                ray.kill(handle)

    def _add(self) -> None:
        name = f"tokenizer-{self.tag}-{len(self.members)}"
        handle = self._cls.options(name=name, namespace=NAMESPACE).remote(self.settings)
        self.members.append(_Member(name, handle))
        self.handles.append(handle)

    def _ask_autoscaler(self, actors: int) -> None:
        bundle = {"GPU": self.placement.gpus_per_actor, "CPU": self.placement.cpus_per_actor}
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[bundle] * actors)
        except Exception as exc:  # noqa: BLE001 - a hint to an autoscaler; the job runs without one
            log.debug("autoscaler request not sent: %s", exc)

    # ---- following the cluster --------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Ping actors, grow the pool onto free GPUs, republish the roster if it changed.

        Returns True when it looked (at most once per REFRESH_S unless `force`).
        """
        now = time.monotonic()
        if not force and now - self._last < REFRESH_S:
            return False
        self._last = now
        self._ping(wait=0.0)
        self._look_at_cluster()
        self._publish()
        return True

    def _ping(self, wait: float) -> list[Exception]:
        """Collect the answered pings and ask those actors again; returns the errors seen."""
        import ray

        outstanding = [m.ping for m in self.members if m.ping is not None]
        answered = set(ray.wait(outstanding, num_returns=len(outstanding), timeout=wait)[0]) if outstanding else set()
        now = time.monotonic()
        errors: list[Exception] = []
        for m in self.members:
            if m.ping is not None and m.ping not in answered:
                if now - m.sent > STALE_S:
                    m.answered = False  # lost with its node, or waiting to be placed again
                continue
            if m.ping is not None:
                try:
                    m.stats = ray.get(m.ping)
                    m.node, m.answered = m.stats.get("node_id"), True
                except Exception as exc:  # noqa: BLE001 - dead or restarting: out of the roster for now
                    m.answered = False
                    errors.append(exc)
                if m.stats.get("start_error"):  # alive, but it cannot use its device
                    m.answered = False
                    errors.append(ActorStartError(str(m.stats["start_error"])))
            m.ping, m.sent = m.handle.stats.remote(), now
        return errors

    def _look_at_cluster(self) -> None:
        import ray

        alive = [n for n in ray.nodes() if n.get("Alive")]
        self.node_cpus = {n["NodeID"]: float(n.get("Resources", {}).get("CPU", 0.0)) for n in alive}
        self.node_gpus = {n["NodeID"]: float(n.get("Resources", {}).get("GPU", 0.0)) for n in alive}
        if self.follow and len(self.members) < self.limit:
            free_gpus = float(ray.available_resources().get("GPU", 0.0))
            waiting = sum(1 for m in self.members if not m.answered)
            new = min(self.limit - len(self.members), math.floor(free_gpus / self.placement.gpus_per_actor) - waiting)
            for _ in range(max(0, new)):
                self._add()
            if new > 0:
                log.info("cluster has %.0f free GPUs: starting %d more tokenizer actors (%d in all)",
                         free_gpus, new, len(self.members))
        if self.auto_decode:
            self.decode_slots = max(1, decode_slots(self.node_cpus, self._expected_actor_cpus(), self.cpus_per_task))

    def actor_cpus(self) -> dict[str, float]:
        """CPUs the actors hold, by the node each last answered from. A restarting actor counts
        too: were its CPUs handed to shard tasks, Ray could not place it again there."""
        used: dict[str, float] = {}
        for m in self.members:
            if m.node:
                used[m.node] = used.get(m.node, 0.0) + self.placement.cpus_per_actor
        return used

    def _expected_actor_cpus(self) -> dict[str, float]:
        """actor_cpus, plus actors that have not answered yet, counted on GPU nodes with room for
        them (where Ray will place them), so their CPUs are not promised to shard tasks."""
        used = self.actor_cpus()
        unplaced = sum(1 for m in self.members if not m.node)
        gpa, cpa = self.placement.gpus_per_actor, self.placement.cpus_per_actor
        if not unplaced or gpa <= 0:
            return used
        placed = Counter(m.node for m in self.members if m.node)
        for node, gpus in self.node_gpus.items():
            take = min(unplaced, int(gpus // gpa) - placed.get(node, 0))
            if take > 0:
                used[node] = used.get(node, 0.0) + take * cpa
                unplaced -= take
        return used

    def ready_nodes(self) -> set[str]:
        return {m.node for m in self.members if m.answered and m.node}

    def _publish(self) -> None:
        ready = [(m.name, m.handle, m.node) for m in self.members if m.answered and m.node]
        key = tuple((name, node) for name, _, node in ready)
        if key == self._members_key or not ready:
            return  # unchanged, or nobody answering right now: keep the last roster
        import ray

        self._members_key = key
        self._version += 1
        made_by = tuple((m.name, str(m.stats.get("device", "unknown")), str(m.stats.get("dtype", "unknown")))
                        for m in self.members if m.answered and m.node)
        roster = Roster(self._version, tuple(ready), max(ROSTER_REFRESH_S, self.decode_slots / REGISTRY_CALLS_PER_S),
                        made_by)
        self.roster_ref = ray.put(roster)
        self.registry.publish.remote(roster)
        log.info("roster %d: %d tokenizer actors on %d nodes", self._version, len(ready), len({n for *_, n in ready}))

    def stats(self) -> list[dict[str, Any]]:
        """Last answered counters of every actor ever started (for progress); {} before any."""
        return [m.stats for m in self.members]

    def final_stats(self, timeout: float = 40.0) -> list[dict[str, Any]]:
        """Every actor's counters read once more (for the summary), waited for together: it
        returns as soon as all have answered. An actor Ray is restarting after a crash refuses
        calls until its new process has started and loaded the model (10-20 s on a loaded node),
        so a refused read is asked again until `timeout`: the summary then shows the restarted
        process, not the dead one's last counters. An actor lost for good costs the wait once and
        keeps its last answer."""
        import ray

        deadline = time.monotonic() + timeout
        pending = {m.handle.stats.remote(): m for m in self.members}
        while pending and time.monotonic() < deadline:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=max(0.0, deadline - time.monotonic()))
            refused = False
            for ref in ready:
                m = pending.pop(ref)
                try:
                    m.stats = ray.get(ref, timeout=0)
                except Exception as exc:  # noqa: BLE001 - restarting or lost: ask again until the deadline
                    log.debug("actor %s gave no final stats yet: %s", m.name, exc)
                    pending[m.handle.stats.remote()] = m
                    refused = True
            if refused:
                time.sleep(0.5)
        return self.stats()


class ShardLauncher:
    """Starts shard tasks, each handed the current roster, preferring a node whose actors it can
    feed without sending frames across the network: a node with ready actors and a CPU to spare
    for one more shard task (soft node affinity; Ray places it elsewhere if that node is gone).
    With no such node the task goes wherever Ray finds a CPU."""

    def __init__(self, task: Any, options: dict[str, Any], job: Any, pool: ActorPool):
        self.task, self.options, self.job, self.pool = task, options, job, pool
        self.steered: dict[Any, str] = {}  # ObjectRef -> node it was sent to
        self.in_flight: dict[str, int] = {}  # node -> shard tasks steered there, still running
        self.running: Any = ()  # the dispatcher's running refs (set once it exists)
        # shard -> signatures of faults its earlier attempts met (the dispatcher's, once it exists)
        self.known_faults: Callable[[Any], frozenset[str]] = lambda shard: frozenset()

    def recount(self) -> None:
        """Forget tasks that finished (called with each pool refresh, not per launch)."""
        live = set(self.running)
        self.steered = {ref: node for ref, node in self.steered.items() if ref in live}
        self.in_flight = {}
        for node in self.steered.values():
            self.in_flight[node] = self.in_flight.get(node, 0) + 1

    def _node(self) -> str | None:
        used = self.pool.actor_cpus()
        best, spare_best = None, 0
        for node in self.pool.ready_nodes():
            cpus = self.pool.node_cpus.get(node, 0.0) - used.get(node, 0.0)
            spare = decode_slots({node: cpus}, {}, self.pool.cpus_per_task) - self.in_flight.get(node, 0)
            if spare > spare_best:
                best, spare_best = node, spare
        return best

    def __call__(self, shard: Any, launch: int) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = self._node()
        where = {} if node is None else {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)}
        task = self.task.options(**self.options, **where)
        ref = task.remote(self.job, shard, launch, self.pool.roster_ref, self.pool.registry,
                          self.known_faults(shard))
        if node is not None:
            self.steered[ref] = node
            self.in_flight[node] = self.in_flight.get(node, 0) + 1
        return ref
