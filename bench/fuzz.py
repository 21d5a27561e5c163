"""Fuzzing the data plane at scale: seeded hostile inputs through the reader and both decoders.

    .venv/bin/python bench/fuzz.py [--seed 21] [--inputs 200] [--seeds 5] [--job]

Per seed: `--inputs` mutated real videos (bit flips, truncations, zeroed headers, splices,
oversized box sizes; every fourth under a hostile name) in one shard, plus five shards of tar
damage (truncated, bad checksum, size over the stream, 1 TiB size, shifted size). Each shard
goes through `pipeline.readers.stages.iter_shard` with the decoder in its child process, once
per decoder. `--job` also runs `tokenmill run` over the first seed's mutated shard (webdataset
output, tiny clips) and checks its exit code and summary.

Reported: inputs tried, ok, dead-lettered by reason, crashes (decoder child killed by a signal),
hangs (decoder timeouts, and shards over the wall-clock bound), lost (samples not accounted),
shard errors by damage kind. Figures in docs/data.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.readers.stages import iter_shard  # noqa: E402
from pipeline.records import DeadLetter, ShardStats  # noqa: E402
from schemas.jobspec import ClipSpec, LimitSpec  # noqa: E402

Decoder = Literal["pyav", "decord"]
HANG_S = 120.0  # a shard taking longer than this counts as a hang


def run_shard(path: Path, decoder: Decoder, limits: LimitSpec) -> tuple[ShardStats, float, int]:
    stats = ShardStats()
    spec = ClipSpec(num_frames=9, resolution=(32, 32), decoder=decoder)
    started = time.monotonic()
    letters = sum(1 for i in iter_shard(str(path), spec, None, stats, limits=limits)
                  if isinstance(i, DeadLetter) and i.stage != "shard")
    return stats, time.monotonic() - started, letters


def fuzz(seeds: list[int], inputs: int, folder: Path) -> dict[str, Any]:
    from tests.fixtures.fuzz import damaged_shards, media_members, tar_bytes

    limits = LimitSpec(decode_timeout_s=60.0)
    report: dict[str, Any] = {}
    decoders: tuple[Decoder, ...] = ("pyav", "decord")
    for decoder in decoders:
        videos: dict[str, Any] = {"inputs": 0, "ok": 0, "reasons": Counter(), "lost": 0, "hangs": 0, "seconds": 0.0}
        damaged: dict[str, Any] = {"shards": 0, "samples_read": 0, "lost": 0, "hangs": 0, "outcome": Counter()}
        for seed in seeds:
            rng = random.Random(seed)
            members = media_members(rng, inputs)
            for label, data in [("media", tar_bytes(members)), *damaged_shards(rng, members[:8])]:
                path = folder / f"{seed}-{label}.tar"
                path.write_bytes(data)
                stats, took, letters = run_shard(path, decoder, limits)
                lost = abs(stats.samples_total - stats.samples_ok - stats.samples_failed)
                lost += abs(letters - stats.samples_failed)
                if label == "media":
                    videos["inputs"] += inputs
                    videos["ok"] += stats.samples_ok
                    videos["reasons"].update(stats.failures)
                    videos["lost"] += lost + inputs - stats.samples_total
                    videos["hangs"] += took > HANG_S
                    videos["seconds"] += took
                else:
                    damaged["shards"] += 1
                    damaged["samples_read"] += stats.samples_total
                    damaged["lost"] += lost
                    damaged["hangs"] += took > HANG_S
                    damaged["outcome"][f"{label}:{(stats.shard_error or 'no error').split(':', 1)[0]}"] += 1
        reasons = videos.pop("reasons")
        videos.update(dead_lettered=sum(reasons.values()), by_reason=dict(reasons.most_common()),
                      crashes=reasons["decode:DecoderCrashed"], seconds=round(videos["seconds"], 1))
        videos["hangs"] += reasons["decode:DecoderTimeout"]
        damaged["outcome"] = dict(sorted(damaged["outcome"].items()))
        report[decoder] = {"videos": videos, "damaged_shards": damaged}
    return report


def run_job(seed: int, inputs: int, folder: Path) -> dict[str, Any]:
    """`tokenmill run` over one mutated shard: exit code, wall time, summary totals."""
    from tests.fixtures.fuzz import media_members, tar_bytes

    shard = folder / "job-000000.tar"
    shard.write_bytes(tar_bytes(media_members(random.Random(seed), inputs)))
    out = folder / "job-out"
    sets = ["clips.resolution=[64,64]", "clips.num_frames=9", "clips.max_clips_per_video=2",
            "tokenizer.batch_size=2", f"input.shards={shard}", f"output.uri={out}", "output.format=webdataset"]
    args = [sys.executable, "-m", "jobs.cli", "run", str(REPO / "examples" / "demo.yaml"), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    summary = json.loads((out / "summary.json").read_text())
    return {"exit_code": proc.returncode, "wall_s": round(time.monotonic() - started, 1),
            **{k: summary[k] for k in ("samples_total", "samples_ok", "samples_failed", "clips_written",
                                       "failures_by_reason")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--seeds", type=int, default=5, help="consecutive seeds from --seed")
    parser.add_argument("--inputs", type=int, default=200, help="mutated videos per seed")
    parser.add_argument("--job", action="store_true", help="also run one real job over --inputs mutated videos")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokenmill-fuzz-") as tmp:
        folder = Path(tmp)
        report: dict[str, Any] = {"seeds": list(range(args.seed, args.seed + args.seeds))}
        report.update(fuzz(report["seeds"], args.inputs, folder))
        if args.job:
            report["job"] = run_job(args.seed, args.inputs, folder)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
