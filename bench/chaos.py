"""Chaos: seeded random faults over repeated runs of a multi-shard job; the output must come out exact.

    python bench/chaos.py --scenarios 8 --seed 1            # output on a moto S3 server
    python bench/chaos.py --scenarios 4 --seed 2 --local    # output on local disk

Input shards are served over HTTP by a fault-injecting server on 127.0.0.1 (the bundled demo
shards, copied to `--shards` names); the output goes to a moto S3 server behind a second
fault-injecting server (a proxy), or to local disk. A clean run gives the reference. Each
scenario then draws 1-3 faults, runs `tokenmill run` (real driver processes on an embedded
Ray) until a run exits 0, and checks the result:

    kill_actor, kill_decoder, kill_shard_task, kill_driver   SIGKILL of that process, mid-run
    stream_cut, stream_reset, stream_503                     the k-th GET of an input shard: the socket
                                                             closed mid-body, reset, or 503 SlowDown
    s3_put_503, s3_put_reset, s3_record_lost_answer          the k-th PUT to the output: 503 SlowDown,
                                                             reset, or forwarded and the answer dropped
    delete_file, truncate_file                               a recorded token file, between runs
    second_driver                                            another driver on the same output at once

Checks after every scenario: the same clip keys as the reference with identical ids (clips
lost and clips doubled must both be 0), `tokens/` and `errors/` hold exactly the recorded
files, the summary adds up (samples_total = ok + failed, every shard done). Prints one row per
scenario and a table of faults injected by kind (the table in docs/execution.md comes from here).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.writers.location import OutputLocation  # noqa: E402
from pipeline.writers.manifest import read_manifest  # noqa: E402
from tests.fixtures.faulty_http import FaultyServer  # noqa: E402
from tests.fixtures.procs import command_line, descendants  # noqa: E402

PROCESS_KINDS = {"kill_actor": "_RayTokenizerWorker", "kill_decoder": "pipeline.readers.isolation",
                 "kill_shard_task": "ray::run_shard", "kill_driver": None}
STREAM_KINDS = {"stream_cut": "cut:40000", "stream_reset": "reset", "stream_503": "status:503"}
S3_KINDS = {"s3_put_503": ("/tokens/", "status:503"), "s3_put_reset": ("/tokens/", "reset"),
            "s3_record_lost_answer": ("/_manifest/", "lost-answer")}
BETWEEN_KINDS = ("delete_file", "truncate_file")
KINDS = (*PROCESS_KINDS, *STREAM_KINDS, *S3_KINDS, *BETWEEN_KINDS, "second_driver")
JOB = ["clips.resolution=[64,64]", "clips.num_frames=9", "clips.max_clips_per_video=2", "tokenizer.batch_size=2",
       "retries.max_attempts=5", "retries.stop_grace_s=5", "retries.lease_timeout_s=10"]
MAX_RUNS = 6


@dataclass
class World:
    workdir: Path
    inputs: FaultyServer
    urls: list[str]
    moto: dict[str, Any] | None = None  # direct storage options (for checking)
    proxy: FaultyServer | None = None
    bucket: str = "chaos"
    reference: dict[str, tuple] = field(default_factory=dict)

    def output(self, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(uri, options through the fault proxy, options direct to the store) for a fresh output."""
        if self.moto is None or self.proxy is None:
            return str(self.workdir / name), {}, {}
        via_proxy = dict(self.moto, endpoint_url=self.proxy.url)
        return f"s3://{self.bucket}/{name}", via_proxy, self.moto


@dataclass
class Outcome:
    scenario: int
    faults: Counter[str]
    runs: int
    exit_codes: list[int]
    lost: int
    doubled: int
    exact_folders: bool
    adds_up: bool
    second_refused: bool = True  # a second driver on a live output exited 2

    @property
    def ok(self) -> bool:
        return not self.lost and not self.doubled and self.exact_folders and self.adds_up and self.second_refused


def _spec_file(world: World, uri: str, opts: dict[str, Any]) -> Path:
    import yaml

    data = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    data["input"] = {"shards": world.urls}
    data["output"] = {"uri": uri, "format": "parquet", "storage_options": opts}
    path = world.workdir / f"job-{abs(hash(uri))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _driver(spec: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "jobs.cli", "run", str(spec), "--no-progress"]
    for s in JOB:
        args += ["--set", s]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _holding(proc: subprocess.Popen, uri: str, opts: dict[str, Any], timeout: float = 300) -> bool:
    """Wait until driver `proc` holds the output's lease (it is past its start-up checks)."""
    from pipeline.writers.lease import read_lease

    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        lease = read_lease(OutputLocation.of(uri, opts))
        if lease is not None and lease[0].pid == proc.pid:
            return True
        time.sleep(0.2)
    return False


def _killer(proc: subprocess.Popen, kind: str, delay: float, hit: Counter[str], uri: str,
            opts: dict[str, Any]) -> threading.Thread:
    """SIGKILL one process of `kind`, `delay` seconds after one is first at work under the driver."""
    marker = PROCESS_KINDS[kind]

    wanted = marker or "ray::run_shard"  # the driver's own kill waits for shard tasks at work too

    def targets() -> list[int]:
        return [pid for pid in descendants(proc.pid) if wanted in command_line(pid)]

    def work() -> None:
        if not _holding(proc, uri, opts):
            return
        # mid-run: from the moment a target is at work, however fast this machine runs the job
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline and not targets():
            time.sleep(0.05)
        time.sleep(delay if marker else delay + 0.5)  # with other kills in the run, theirs first
        while proc.poll() is None and time.monotonic() < deadline:
            if marker is None:
                proc.kill()
                hit[kind] += 1
                return
            live = targets()
            if live:
                try:
                    os.kill(random.Random(delay).choice(live), signal.SIGKILL)
                    hit[kind] += 1
                except ProcessLookupError:
                    continue
                return
            time.sleep(0.05)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def _tokens(uri: str, opts: dict[str, Any]) -> tuple[dict[str, tuple], int, set[str], set[str]]:
    """(key -> ids, duplicate rows, files named by records, files published) of an output."""
    import pyarrow.parquet as pq

    loc = OutputLocation.of(uri, opts)
    rows: dict[str, tuple] = {}
    doubled = 0
    records = read_manifest(loc)
    named = {o.path for r in records.values() for o in r.outputs.values()}
    for rec in records.values():
        with loc.fs.open(loc.path(rec.outputs["tokens"].path), "rb") as f:
            for row in pq.read_table(f, columns=["key", "tokens"]).to_pylist():
                doubled += row["key"] in rows
                rows[row["key"]] = tuple(row["tokens"])
    from pipeline.writers import storage

    published = {f"{sub}/{name}" for sub in ("tokens", "errors") for name in storage.list_files(loc.fs, loc.path(sub))}
    return rows, doubled, named, published


def _between_runs(kind: str, uri: str, opts: dict[str, Any], rng: random.Random) -> None:
    loc = OutputLocation.of(uri, opts)
    records = read_manifest(loc)
    victim = loc.path(records[rng.choice(sorted(records))].outputs["tokens"].path)
    if kind == "delete_file":
        loc.fs.rm_file(victim)
    else:
        loc.fs.pipe_file(victim, loc.fs.cat_file(victim)[:100])


def _arm_network(world: World, kind: str, rng: random.Random) -> None:
    if kind in STREAM_KINDS:
        shard = rng.choice(world.urls).rsplit("/", 1)[1]
        world.inputs.add_fault(shard, STREAM_KINDS[kind])  # a shard is one GET: its first read fails
    elif kind in S3_KINDS and world.proxy is not None:
        where, action = S3_KINDS[kind]
        world.proxy.add_fault(where, action, method="PUT", after=rng.randrange(0, 4))


def scenario(world: World, index: int, rng: random.Random, kinds: list[str] | None = None) -> Outcome:
    uri, opts, direct = world.output(f"scenario-{index}")
    if kinds is None:
        usable = [k for k in KINDS if world.proxy is not None or k not in S3_KINDS]
        kinds = rng.sample(usable, rng.randint(1, 3))
    spec = _spec_file(world, uri, opts)
    hit: Counter[str] = Counter()
    before = Counter(world.inputs.injected) + (Counter(world.proxy.injected) if world.proxy else Counter())
    for kind in kinds:
        _arm_network(world, kind, rng)
    codes: list[int] = []
    refused = True
    pending = [k for k in kinds if k in PROCESS_KINDS or k == "second_driver"]
    between = [k for k in kinds if k in BETWEEN_KINDS]
    while len(codes) < MAX_RUNS:
        proc = _driver(spec)
        for kind in [k for k in pending if k in PROCESS_KINDS]:
            _killer(proc, kind, rng.uniform(0, 0.3), hit, uri, direct or opts)
        if "second_driver" in pending and _holding(proc, uri, direct or opts):
            second = _driver(spec)  # while the first holds the lease: it must be refused, exit 2
            _, second.stderr = second.communicate(timeout=600)  # type: ignore[assignment]
            hit["second_driver"] += 1
            codes.append(second.returncode)
            refused = second.returncode == 2 and "another driver" in second.stderr
            if not refused:
                print(f"scenario {index}: the second driver was not refused ({second.returncode})", file=sys.stderr)
        pending = []
        proc.communicate(timeout=900)
        codes.append(proc.returncode)
        if proc.returncode == 0 and between:
            kind = between.pop()
            _between_runs(kind, uri, direct or opts, rng)
            hit[kind] += 1
            continue
        if proc.returncode == 0:
            break
    after = Counter(world.inputs.injected) + (Counter(world.proxy.injected) if world.proxy else Counter())
    network = after - before
    for kind in kinds:
        if kind in STREAM_KINDS or kind in S3_KINDS:
            action = (STREAM_KINDS.get(kind) or S3_KINDS[kind][1]).split(":")[0]
            hit[kind] += min(1, network[action])
    rows, doubled, named, published = _tokens(uri, direct or opts)
    loc = OutputLocation.of(uri, direct or opts)
    summary = json.loads(loc.fs.cat_file(loc.path(loc.SUMMARY)))
    lost = len(set(world.reference) - set(rows)) + sum(rows[k] != v for k, v in world.reference.items() if k in rows)
    adds_up = (summary["samples_total"] == summary["samples_ok"] + summary["samples_failed"]
               and summary["shards_done"] == len(world.urls) and set(rows) == set(world.reference))
    return Outcome(index, hit, len(codes), codes, lost, doubled, named == published, adds_up, refused)


@contextmanager
def world_for(shards: int, local: bool, workdir: Path) -> Iterator[World]:
    served = workdir / "served"
    served.mkdir(parents=True, exist_ok=True)
    sample = sorted((REPO / "data" / "sample").glob("shards-*.tar"))
    for i in range(shards):
        shutil.copy(sample[i % len(sample)], served / f"chaos-{i:06d}.tar")
    inputs = FaultyServer(root=served)
    world = World(workdir, inputs, [f"{inputs.url}/chaos-{i:06d}.tar" for i in range(shards)])
    moto_proc = None
    try:
        if not local:
            from tests.fixtures.net import free_port
            from tests.fixtures.s3 import _moto_server_command, _wait_until_up

            port = free_port()
            moto_proc = subprocess.Popen(_moto_server_command(port), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            _wait_until_up(f"http://127.0.0.1:{port}", moto_proc)
            world.moto = {"key": "testing", "secret": "testing", "endpoint_url": f"http://127.0.0.1:{port}"}
            world.proxy = FaultyServer(upstream=world.moto["endpoint_url"])
            OutputLocation.of(f"s3://{world.bucket}", world.moto).fs.mkdir(world.bucket)
        uri, opts, direct = world.output("reference")
        ref = _driver(_spec_file(world, uri, opts))
        _, err = ref.communicate(timeout=900)
        if ref.returncode != 0:
            raise RuntimeError(f"the clean reference run failed ({ref.returncode}): {err[-2000:]}")
        world.reference = _tokens(uri, direct or opts)[0]
        yield world
    finally:
        inputs.close()
        if world.proxy is not None:
            world.proxy.close()
        if moto_proc is not None:
            moto_proc.terminate()
            moto_proc.wait(timeout=60)


def report(outcomes: list[Outcome]) -> str:
    lines = [f"{'scenario':>8} {'faults':48} {'runs':>4} {'exits':16} {'lost':>4} {'doubled':>7} {'exact':>5} ok"]
    for o in outcomes:
        faults = ", ".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(o.faults.items()) if v) or "-"
        lines.append(f"{o.scenario:8d} {faults:48} {o.runs:4d} {','.join(map(str, o.exit_codes)):16} "
                     f"{o.lost:4d} {o.doubled:7d} {str(o.exact_folders):>5} {'yes' if o.ok else 'NO'}")
    total: Counter[str] = Counter()
    for o in outcomes:
        total.update(o.faults)
    lines.append("")
    lines.append("| fault | injected |")
    lines.append("|---|---|")
    for kind in KINDS:
        lines.append(f"| {kind} | {total.get(kind, 0)} |")
    lines.append(f"| **scenarios / runs** | {len(outcomes)} / {sum(o.runs for o in outcomes)} |")
    lines.append(f"| **clips lost / doubled** | {sum(o.lost for o in outcomes)} / {sum(o.doubled for o in outcomes)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--local", action="store_true", help="output on local disk instead of moto S3")
    ap.add_argument("--kinds", default=None, help="comma-separated fault kinds for every scenario (default: drawn)")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",") if args.kinds else None
    unknown = sorted(set(kinds or ()) - set(KINDS))
    if unknown:
        ap.error(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="tokenmill-chaos-"))
    try:
        with world_for(args.shards, args.local, workdir) as world:
            outcomes = []
            for i in range(args.scenarios):
                outcome = scenario(world, i, rng, kinds)
                outcomes.append(outcome)
                print(report([outcome]).splitlines()[1], flush=True)
        print(report(outcomes))
        return 0 if all(o.ok for o in outcomes) else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
