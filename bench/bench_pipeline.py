"""Pipeline throughput on this machine, in one run (ratios against stages measured in the same run).

    decode-only     pipeline.readers.stages.iter_shard over every shard, `--decode-workers` processes
    tokenize-only   the same clips, pre-decoded, through one in-process TokenizerWorker
    end-to-end      `run_job` on an embedded Ray with 1 tokenizer actor, then with 2
                    (throughput = clips / dispatch time, i.e. after Ray and the actors are up)

Input: the bundled demo shards, copied `--copies` times under new names so there is enough work.
Goal (issue 7): end-to-end >= 0.85 x the slower stage. Timings on a shared machine are noisy:
compare ratios, not absolute numbers.

    .venv/bin/python bench/bench_pipeline.py [--copies 3] [--resolution 128 128] [--num-frames 17]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from jobs.actors import ActorSettings, TokenizerWorker  # noqa: E402
from jobs.runner import run_job  # noqa: E402
from pipeline.records import Clip, ShardStats  # noqa: E402
from schemas.jobspec import JobSpec, load_job_spec  # noqa: E402


def make_shards(folder: Path, copies: int) -> list[str]:
    sources = sorted((REPO / "data" / "sample").glob("shards-*.tar"))
    urls = []
    for c in range(copies):
        for src in sources:
            dst = folder / f"bench{c}-{src.name}"
            shutil.copyfile(src, dst)
            urls.append(str(dst))
    return urls


def job_spec(args: argparse.Namespace, shards: list[str], output: str, actors: int) -> JobSpec:
    sets = [
        f"input.shards={json.dumps(shards)}", f"output.uri={output}",
        f"clips.resolution=[{args.resolution[0]},{args.resolution[1]}]", f"clips.num_frames={args.num_frames}",
        "clips.max_clips_per_video=null", f"tokenizer.name={args.tokenizer}", "tokenizer.init=random",
        f"tokenizer.batch_size={args.batch_size}", f"resources.num_actors={actors}",
    ]
    return load_job_spec(str(REPO / "examples" / "demo.yaml"), sets)


def _decode_one(url: str, spec: JobSpec) -> tuple[list[Clip], float]:
    from pipeline.readers.stages import iter_shard

    start = time.perf_counter()
    clips = [c for c in iter_shard(url, spec.clips, {}, ShardStats(), isolate=True) if isinstance(c, Clip)]
    return clips, time.perf_counter() - start


def bench_decode(spec: JobSpec, shards: list[str], workers: int) -> tuple[list[Clip], float]:
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_decode_one, shards, [spec] * len(shards)))
    return [c for clips, _ in results for c in clips], time.perf_counter() - start


def bench_tokenize(spec: JobSpec, clips: list[Clip], threads: int) -> float:
    import numpy as np

    settings = ActorSettings(spec.tokenizer.name, None, "random", spec.tokenizer.dtype, "cpu", 0, 1, threads)
    worker = TokenizerWorker(settings)
    bs = int(spec.tokenizer.batch_size)  # the benchmark always sets it
    worker.encode(np.stack([c.frames for c in clips[:bs]]))  # warm-up (first-call allocations)
    start = time.perf_counter()
    for i in range(0, len(clips), bs):
        worker.encode(np.stack([c.frames for c in clips[i:i + bs]]))
    return time.perf_counter() - start


def bench_end_to_end(args: argparse.Namespace, shards: list[str], actors: int) -> dict:
    output = tempfile.mkdtemp(prefix=f"bench-e2e{actors}-")
    try:
        outcome = run_job(job_spec(args, shards, output, actors))
        s = outcome.summary
        busy = [round(a.get("busy_fraction", 0.0), 2) for a in s.get("actors", [])]
        return {"clips": s["clips_written"], "seconds": s["dispatch_seconds"],
                "wall_seconds": s["timings"]["wall_seconds"], "busy": busy}
    finally:
        shutil.rmtree(output, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--resolution", type=int, nargs=2, default=[128, 128])
    p.add_argument("--num-frames", type=int, default=17)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--tokenizer", default="DV4x8x8-tiny")
    p.add_argument("--decode-workers", type=int, default=2)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        shards = make_shards(folder, args.copies)
        spec = job_spec(args, shards, str(folder / "unused"), 1)
        clips, t_dec = bench_decode(spec, shards, args.decode_workers)
        n = len(clips)
        t_tok = bench_tokenize(spec, clips, threads=1)  # what a CPU actor with cpus_per_actor < 2 uses
        rates = {"decode": n / t_dec, "tokenize": n / t_tok}
        print(f"clips: {n} x {args.num_frames}x{args.resolution[0]}x{args.resolution[1]}, "
              f"tokenizer {args.tokenizer}, batch {args.batch_size}, {os.cpu_count()} CPUs")
        print(f"decode-only   ({args.decode_workers} procs): {rates['decode']:7.2f} clips/s  ({t_dec:.1f} s)")
        print(f"tokenize-only (1 thread):   {rates['tokenize']:7.2f} clips/s  ({t_tok:.1f} s)")
        slower = min(rates.values())
        for actors in (1, 2):
            e2e = bench_end_to_end(args, shards, actors)
            assert e2e["clips"] == n, f"end-to-end wrote {e2e['clips']} clips, decode-only saw {n}"
            rate = e2e["clips"] / e2e["seconds"]
            print(f"end-to-end {actors} actor(s):   {rate:7.2f} clips/s  ({e2e['seconds']:.1f} s after start-up, "
                  f"{e2e['wall_seconds']:.1f} s wall) = {rate / slower:.2f} x slower stage; busy {e2e['busy']}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
