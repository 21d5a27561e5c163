"""What a large job costs the driver, measured on this machine, as inputs to a 1,000-GPU projection.

    python bench/bench_scale.py driver  [--in-flight 1000 5000 10000] [--seconds 5]
    python bench/bench_scale.py cluster [--nodes 8] [--copies 4]
    python bench/bench_scale.py plan    [--shards 100000]

driver   The real ShardDispatcher loop over fake shards: four async actors hold every
         "shard" as a coroutine sleeping `--seconds`, so thousands are in flight without
         thousands of worker processes. The driver sees what it sees in a job, one ObjectRef per
         shard; what it does not pay here is the raylet's scheduling of real tasks. Reports, per
         1,000 shards in flight: driver memory (RSS growth) and driver CPU, and the hand-out
         latency (a shard's end to its slot's next launch), median and p99.
cluster  A simulated cluster (ray.cluster_utils.Cluster): a head with no CPU and `--nodes`
         worker nodes with 2 CPUs and a fake GPU each; `tokenmill run` with the tiny random
         tokenizer on the bundled shards copied `--copies` times. Reports actors per node and the
         bytes of frames sent to an actor on the shard task's node and on another node.
plan     Driver-side planning over `--shards` inputs: resolve_shards over that many local files
         (names and sizes for the ids) and plan_shards over a synthetic output with that many
         records (listings + index; bench/bench_manifest.py builds it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


SLEEPERS = 4


class Sleepers:
    """Fake shard tasks: each call sleeps, then returns the time it finished."""

    async def shard(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return time.time()


def driver(in_flight: list[int], seconds: float) -> None:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    cls: Any = ray.remote(Sleepers)
    # several processes hold the fake shards: one async actor alone saturates near 5,000 in flight
    sleepers = [cls.options(num_cpus=0, max_concurrency=max(in_flight) + 10).remote() for _ in range(SLEEPERS)]
    ray.get([s.shard.remote(0.0) for s in sleepers])
    print(f"{'in flight':>9} {'shards':>7} {'RSS +MB':>8} {'MB/1k':>6} {'CPU s/s':>8} {'CPU %/1k':>8} "
          f"{'hand-outs/s':>11} {'ideal/s':>8} {'latency p50 ms':>14} {'p99 ms':>7}")
    for n in in_flight:
        _driver_at(sleepers, n, seconds)
    ray.shutdown()


def _driver_at(sleepers: list[Any], n: int, seconds: float) -> None:
    """Three rounds of `n` fake shards through the real dispatcher, `n` in flight."""
    from jobs.dispatch import ShardDispatcher

    total = 3 * n
    finished: list[float] = []  # finish times of collected shards whose slot is not refilled yet
    latencies: list[float] = []

    class Timed(ShardDispatcher):
        def _collect(self, ref: Any, retry: bool = True) -> None:
            url = self.running[ref].url
            super()._collect(ref, retry)
            if url in self.result.records:
                finished.append(self.result.records[url])

    turn = itertools.count()

    def launch(url: str, attempt: int) -> Any:
        if finished:
            latencies.append(time.time() - finished.pop(0))
        return sleepers[next(turn) % len(sleepers)].shard.remote(seconds)

    rss0, cpu0, t0 = rss_mb(), cpu_seconds(), time.time()
    peak = rss0

    def tick(result: Any, running: int) -> None:
        nonlocal peak
        peak = max(peak, rss_mb())

    Timed(launch, max_in_flight=n, max_attempts=1, on_tick=tick).run(
        [f"s3://bench/shard-{i:07d}.tar" for i in range(total)])
    wall, cpu = time.time() - t0, cpu_seconds() - cpu0
    lat = sorted(latencies) or [0.0]
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"{n:9d} {total:7d} {peak - rss0:8.1f} {(peak - rss0) / n * 1000:6.1f} {cpu / wall:8.3f} "
          f"{100 * cpu / wall / n * 1000:8.2f} {total / wall:11.1f} {n / seconds:8.1f} "
          f"{1000 * statistics.median(lat):14.1f} {1000 * p99:7.1f}")


def cluster(nodes: int, copies: int) -> None:
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    sim = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0, "include_dashboard": False})
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        t0 = time.time()
        for _ in range(nodes):
            sim.add_node(num_cpus=2, num_gpus=1)
        sim.wait_for_nodes()
        started = time.time() - t0
        for i in range(copies):
            shutil.copytree(REPO / "data" / "sample", tmp / "in" / f"c{i}")
        out = tmp / "out"
        args = [sys.executable, "-m", "jobs.cli", "run", str(REPO / "examples" / "demo.yaml"), "--no-progress",
                "--address", str(sim.address)]
        for s in ("clips.resolution=[64,64]", "clips.num_frames=9", "clips.max_clips_per_video=2",
                  "tokenizer.batch_size=2", "tokenizer.device=cpu", f"input.shards={tmp}/in/*/shards-*.tar",
                  f"output.uri={out}"):
            args += ["--set", s]
        env = dict(os.environ, PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS", None)
        t1 = time.time()
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.time() - t1
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        summary = json.loads((out / "summary.json").read_text())
        per_node: dict[str, int] = {}
        for a in summary["actors"]:
            per_node[a.get("node_id", "?")] = per_node.get(a.get("node_id", "?"), 0) + 1
        moved = summary["frame_bytes"]
        total = sum(moved.values()) or 1
        print(f"nodes {nodes} (started in {started:.0f} s), shards {summary['shards_total']}, "
              f"clips {summary['clips_written']}, job wall {wall:.0f} s, dispatch {summary['dispatch_seconds']:.0f} s")
        print(f"actors {len(summary['actors'])} on {len(per_node)} nodes (max {max(per_node.values())} per node); "
              f"decode slots {summary['placement']['decode_workers_final']}")
        print(f"frame bytes: same node {moved.get('same_node', 0)}, other node {moved.get('other_node', 0)} "
              f"({100 * moved.get('other_node', 0) / total:.1f}% crossed nodes)")
    finally:
        sim.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def plan(shards: int) -> None:
    from bench_manifest import build

    from pipeline.readers.sources import resolve_shards
    from pipeline.writers import storage
    from pipeline.writers.manifest import compact_manifest, plan_shards

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-plan-"))
    try:
        for i in range(shards):
            folder = tmp / "in" / f"{i // 10_000:02d}"
            if i % 10_000 == 0:
                folder.mkdir(parents=True)
            (folder / f"shard-{i:07d}.tar").write_bytes(b"x" * (1 + i % 7))
        t0 = time.perf_counter()
        inputs = resolve_shards(str(tmp / "in" / "*" / "shard-*.tar"))
        resolved = time.perf_counter() - t0
        assert len(inputs) == shards and len({s.id for s in inputs}) == shards
        uri = str(tmp / "out")
        fs, root = storage.get_fs(uri, {})
        urls = build(fs, root, shards)
        compact_manifest(uri)
        t0 = time.perf_counter()
        todo, done = plan_shards(urls, uri)
        planned = time.perf_counter() - t0
        assert not todo and len(done) == shards
        print(f"shards {shards}: resolve_shards {resolved:.2f} s, plan_shards (index) {planned:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("driver")
    d.add_argument("--in-flight", type=int, nargs="+", default=[1000, 5000, 10000])
    d.add_argument("--seconds", type=float, default=5.0)
    c = sub.add_parser("cluster")
    c.add_argument("--nodes", type=int, default=8)
    c.add_argument("--copies", type=int, default=4)
    p = sub.add_parser("plan")
    p.add_argument("--shards", type=int, default=100_000)
    args = ap.parse_args()
    if args.what == "driver":
        driver(args.in_flight, args.seconds)
    elif args.what == "cluster":
        cluster(args.nodes, args.copies)
    else:
        plan(args.shards)


if __name__ == "__main__":
    main()
