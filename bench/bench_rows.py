"""Tokenizer-actor memory and time for whole-video rows (clips.num_frames: all) and sampled quality.

    .venv/bin/python bench/bench_rows.py [--preset DV8x16x16] [--size 128x224] [--frames 17 65 129 257]
        [--chunk 16] [--threads 2]

Every case runs in a fresh process through the actor's own code (jobs.actors.TokenizerWorker,
seeded random weights: memory and time do not depend on their values): `encode` of one
17-frame clip, `encode_scored` of it (quality.sample_rate: decoded back and scored), and
`stream_encode` of rows of --frames frames arriving in chunks of --chunk (generated chunk by
chunk, never whole in memory), without and with scoring. Reported per case: peak RSS growth
during the work (VmHWM after minus VmRSS before, high-water mark reset first; glibc serves blocks
over 1 MiB by mmap so freed tensors leave RSS), CPU seconds, and for streams the temporal-attention
cache (every past frame's normalised input at the bottleneck) at the row's last chunk, measured on
the modules. A 10-minute 720p video is too
slow to encode on a CPU here (one 17-frame 720p clip of DV8x16x16 took 245 s), so the output also
extrapolates the measured per-latent-frame cache to 720p and 10 minutes at 30 fps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_tokenizer import _rss_kib  # beside this script: VmRSS / VmHWM of this process, KiB

REPO = Path(__file__).resolve().parents[1]


def _attention_cache_bytes(worker: Any) -> int:
    streams = getattr(worker, "_streams", None)
    if streams is None:
        return 0
    total = 0
    for stream in streams.streams.values():
        for side in (stream.encoder, stream.decoder):
            for state in (side._state if side is not None else []):
                total += sum(t.nbytes for t in state.get("h", []))
    return total


def worker(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from jobs.actors import ActorSettings, TokenizerWorker

    settings = ActorSettings(job["preset"], None, "random", "float32", "cpu", 0, job["threads"], job["threads"],
                             batch_size=1)
    tok = TokenizerWorker(settings)
    h, w = job["size"]
    rng = np.random.default_rng(0)

    def frames(n: int) -> np.ndarray:
        return rng.integers(0, 256, size=(1, n, h, w, 3), dtype=np.uint8)

    tok.encode(frames(1 + tok.tok.config.temporal_compression))  # warm-up (oneDNN kernels)
    before = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    start, cache = time.process_time(), 0
    if job["mode"] in ("clip", "clip_scored"):
        clip = frames(17)
        tok.encode(clip) if job["mode"] == "clip" else tok.encode_scored(clip, [True])
    else:
        sizes = [1 + job["chunk"]] + [job["chunk"]] * ((job["frames"] - 1 - job["chunk"]) // job["chunk"])
        for part, n in enumerate(sizes):
            final = part == len(sizes) - 1
            if final:
                cache = _attention_cache_bytes(tok)
            tok.stream_encode("bench", part, frames(n), final, job["mode"] == "stream_scored")
    return {"cpu_s": round(time.process_time() - start, 2),
            "peak_growth_mib": round((_rss_kib("VmHWM") - before) / 1024, 1), "attention_cache_mib": round(cache / 2**20, 2)}


def _run(job: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "1048576"}
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                         env=env, cwd=REPO, check=False)
    if out.returncode:
        raise RuntimeError(f"worker {job} failed:\n{out.stderr[-2000:]}")
    return {**job, **json.loads(out.stdout.strip().splitlines()[-1])}


def _extrapolate(results: list[dict[str, Any]], temporal: int, spatial: int, size: tuple[int, int]) -> dict[str, Any]:
    """Cache per latent frame per grid cell, measured, scaled to 720p and 10 minutes at 30 fps."""
    longest = max((r for r in results if r["mode"] == "stream"), key=lambda r: r["frames"])
    cached = (longest["frames"] - longest["chunk"] - 1) // temporal + 1  # latent frames before the last chunk
    cells = (size[0] // spatial) * (size[1] // spatial)
    per_cell = longest["attention_cache_mib"] * 2**20 / (cached * cells)
    cells_720p = (720 // spatial) * (1280 // spatial)
    latents_10min = 1 + (10 * 60 * 30 - 1) // temporal
    return {"cache_bytes_per_latent_frame_per_cell": round(per_cell, 1),
            "cache_mib_per_latent_frame_720p": round(per_cell * cells_720p / 2**20, 2),
            "cache_gib_10min_720p_30fps": round(per_cell * cells_720p * latents_10min / 2**30, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="DV8x16x16")
    parser.add_argument("--size", default="128x224", help="HxW of the frames")
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 65, 129, 257])
    parser.add_argument("--scored-frames", type=int, default=65)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import tokenizer_core

    config = tokenizer_core.preset_config(args.preset)
    size = tuple(int(v) for v in args.size.split("x"))
    base = {"preset": args.preset, "size": size, "threads": args.threads, "chunk": args.chunk}
    results = [_run({**base, "mode": "clip", "frames": 17}), _run({**base, "mode": "clip_scored", "frames": 17})]
    for n in args.frames:
        results.append(_run({**base, "mode": "stream", "frames": n}))
        print(json.dumps(results[-1]), file=sys.stderr)
    results.append(_run({**base, "mode": "stream_scored", "frames": args.scored_frames}))
    extra = _extrapolate(results, config.temporal_compression, config.spatial_compression, size)  # type: ignore[arg-type]
    print(json.dumps({"results": results, "extrapolated": extra}, indent=2))


if __name__ == "__main__":
    main()
