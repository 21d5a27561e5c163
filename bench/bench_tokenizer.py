"""Native tokenizer vs the official implementation on the same weights; streaming memory.

    .venv/bin/python bench/bench_tokenizer.py [--official-path DIR] [--presets CV8x8x8 DV8x16x16]
        [--shapes 17x256x256 33x512x512] [--threads 2] [--repeat 2] [--stream-shape 256x256]

Reference ("official"): NVIDIA's `cosmos_tokenizer` package when it can be imported (put a
checkout of NVIDIA/Cosmos-Tokenizer on PYTHONPATH or pass --official-path; never commit it;
a missing `loguru` is replaced by a stub), built from its own config with the native model's
weights loaded strictly. Otherwise ("jit") the native model traced with torch.jit.trace the way
the official .jit files are made, which compares the runtimes but not the implementations.

Every measurement runs in a fresh process: wall time and CPU time (best of --repeat, the first
run includes oneDNN warm-up), and peak RSS growth during the call (VmHWM after the call minus
VmRSS before it, with the high-water mark reset through /proc/self/clear_refs; glibc is told to
serve blocks over 1 MiB by mmap so that freed tensors leave RSS). Weights are
seeded random (timing and memory do not depend on their values). Ratios are official/native:
above 1 means native is faster or smaller. Streaming: native CV8x8x8 (or --stream-preset) peak
memory encoding 257 frames arriving in chunks of --stream-chunk frames (generated chunk by chunk,
never whole in memory) against one full pass over a 33-frame clip.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _official_model(name: str, official_path: str | None) -> Any:
    if official_path:
        sys.path.insert(0, official_path)
    try:
        import loguru  # noqa: F401
    except ImportError:
        sys.modules["loguru"] = types.SimpleNamespace(logger=logging.getLogger("cosmos"))  # type: ignore[assignment]
    from cosmos_tokenizer.networks import TokenizerConfigs, TokenizerModels

    family, factors = name[:2], [int(v) for v in name[2:].split("x")]
    cfg = dict(TokenizerConfigs[family].value)
    cfg.update(temporal_compression=factors[0], spatial_compression=factors[1])
    return TokenizerModels[family].value(**cfg).eval()


def _reference(impl: str, native: Any, x: Any, official_path: str | None) -> tuple[Any, Any]:
    """(encode fn, decode fn) of the reference implementation holding `native`'s weights."""
    import torch

    if impl == "official":
        ref = _official_model(native.config.name, official_path)
        ref.load_state_dict(native.state_dict(), strict=True)
        if native.config.discrete:
            ref.quantizer.dtype = torch.float32
            return (lambda v: ref.encode(v)[0]), (lambda z: ref.decode_code(z))
        return (lambda v: ref.encode(v)[0]), (lambda z: ref.decode(z))
    from tokenizer_core.official import export_official_jit

    folder = Path(tempfile.mkdtemp(prefix="bench-jit-"))
    export_official_jit(native, folder, x[:, :, :9, :64, :64], autoencoder=False)
    enc, dec = torch.jit.load(str(folder / "encoder.jit")), torch.jit.load(str(folder / "decoder.jit"))
    return (lambda v: enc(v)[0]), (lambda z: dec(z))


def _measure(fn: Any, arg: Any, repeat: int) -> dict[str, float]:
    wall, cpu, peak = [], [], []
    for _ in range(repeat):
        before = _rss_kib("VmRSS")
        _reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        fn(arg)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        peak.append((_rss_kib("VmHWM") - before) / 1024)
    return {"wall_s": min(wall), "cpu_s": min(cpu), "peak_mib": min(peak)}


def worker(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    import tokenizer_core as tc

    torch.set_num_threads(job["threads"])
    native = tc.from_pretrained(job["preset"], init="random")
    t, h, w = job["shape"]
    x = torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if job.get("mode") == "stream":
        # A long video arriving chunk by chunk (as from a decoder): never whole in memory.
        chunk = job["chunk"]

        def chunks(_: Any) -> Any:
            gen = torch.Generator().manual_seed(0)
            sizes = [1 + chunk] + [chunk] * ((t - 1 - chunk) // chunk)
            for n in sizes:
                yield torch.rand(1, 3, n, h, w, generator=gen) * 2 - 1

        return _measure(lambda _: list(native.encode_stream(chunks(None))), None, job["repeat"])
    with torch.no_grad():
        if job["impl"] == "native":
            enc, dec = native.encode, native.decode
        else:
            enc, dec = _reference(job["impl"], native, x, job.get("official_path"))
        latent = native.encode(x) if job["op"] == "decode" else None
        return _measure(enc if job["op"] == "encode" else dec, x if job["op"] == "encode" else latent, job["repeat"])


def _run(job: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           # Large blocks straight from/to the OS, so RSS follows live tensors instead of glibc's
           # retained, fragmented heap (same setting for every implementation).
           "MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "1048576"}
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True,
                         text=True, env=env, cwd=REPO, check=False)
    if out.returncode:
        raise RuntimeError(f"worker {job} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _official_available(path: str | None) -> bool:
    code = "import sys, types, logging; sys.modules.setdefault('loguru', types.SimpleNamespace(logger=None)); " \
           "import cosmos_tokenizer.networks"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--official-path", default=None)
    parser.add_argument("--presets", nargs="+", default=["CV8x8x8", "DV8x16x16"])
    parser.add_argument("--shapes", nargs="+", default=["17x256x256", "33x512x512"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--stream-preset", default="CV8x8x8")
    parser.add_argument("--stream-shape", default="256x256")
    parser.add_argument("--stream-chunk", type=int, default=16, help="frames per streamed chunk (multiple of t)")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    impl = "official" if _official_available(args.official_path) else "jit"
    print(f"reference implementation: {impl}; threads={args.threads}; repeat={args.repeat}")
    results: list[dict[str, Any]] = []
    base = {"threads": args.threads, "repeat": args.repeat, "official_path": args.official_path}
    if not args.skip_compare:
        for preset in args.presets:
            for shape_text in args.shapes:
                shape = [int(v) for v in shape_text.split("x")]
                for op in ("encode", "decode"):
                    row: dict[str, Any] = {"preset": preset, "shape": shape_text, "op": op}
                    for which in (impl, "native"):
                        row[which] = _run({**base, "preset": preset, "shape": shape, "op": op, "impl": which})
                    row["speedup_cpu"] = row[impl]["cpu_s"] / row["native"]["cpu_s"]
                    row["speedup_wall"] = row[impl]["wall_s"] / row["native"]["wall_s"]
                    row["memory_ratio"] = row["native"]["peak_mib"] / max(row[impl]["peak_mib"], 1e-9)
                    results.append(row)
                    print(f"{preset:10s} {shape_text:11s} {op:6s} {impl} {row[impl]['wall_s']:7.2f}s "
                          f"{row[impl]['peak_mib']:7.0f}MiB | native {row['native']['wall_s']:7.2f}s "
                          f"{row['native']['peak_mib']:7.0f}MiB | speedup wall {row['speedup_wall']:.2f} "
                          f"cpu {row['speedup_cpu']:.2f} | memory native/{impl} {row['memory_ratio']:.2f}", flush=True)
    if not args.skip_stream:
        h, w = (int(v) for v in args.stream_shape.split("x"))
        job = {**base, "preset": args.stream_preset, "op": "encode", "impl": "native", "repeat": 1}
        short = _run({**job, "shape": [33, h, w], "mode": "full"})
        long = _run({**job, "shape": [257, h, w], "mode": "stream", "chunk": args.stream_chunk})
        ratio = long["peak_mib"] / max(short["peak_mib"], 1e-9)
        results.append({"stream": args.stream_preset, "shape": args.stream_shape, "full_33": short,
                        "stream_257": long, "memory_ratio": ratio})
        print(f"streaming {args.stream_preset} {args.stream_shape}: 33 frames full {short['peak_mib']:.0f}MiB "
              f"{short['wall_s']:.1f}s | 257 frames streamed in chunks of {args.stream_chunk} "
              f"{long['peak_mib']:.0f}MiB {long['wall_s']:.1f}s | "
              f"memory ratio {ratio:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
