"""Native tokenizer vs the form users run (the released encoder.jit / decoder.jit); streaming memory.

    .venv/bin/python bench/bench_tokenizer.py [--jit-dir DIR] [--official-path DIR]
        [--presets CV8x8x8 DV8x16x16] [--shapes 17x256x256] [--ops encode decode]
        [--threads 2] [--repeat 5] [--stream-shape 256x256] [--json out.json]

Reference, first column ("jit"): official-format TorchScript files, `DIR/<preset>/encoder.jit`
and `decoder.jit` under --jit-dir (or $TOKENMILL_OFFICIAL_JIT): NVIDIA's released files, or files
traced from NVIDIA's own eager classes the way the release is made (`torch.jit.trace` of
`encoder_jit()` / `decoder_jit()`). The native model loads its weights from the same files, so
both sides hold identical weights. Without such files the bench falls back to
`export_official_jit` of the native model ("jit-of-native"): that is tokenmill's own module
traced, the same file layout but not NVIDIA's graph, and is labelled so in every row.
Second column ("eager"): NVIDIA's Python classes (`cosmos_tokenizer`, from --official-path or
PYTHONPATH; never committed here; a missing `loguru` is replaced by a stub) holding the same
weights, when importable.

Wall and CPU time: one process holds every implementation; after two warm-up calls each (the
TorchScript profiling executor optimises on its second call), --repeat rounds call each once in
rotating order. Reported: the median per implementation, and speedup = the median over rounds of
reference time / native time (above 1: native is faster).
Peak memory: each implementation in a fresh process, one warm-up call, then the peak RSS growth
during one more call (VmHWM after minus VmRSS before, the high-water mark reset through
/proc/self/clear_refs; glibc is told to serve blocks over 1 MiB by mmap so that freed tensors
leave RSS). memory = native / reference (below 1: native is smaller).
Streaming: native --stream-preset peak memory encoding 257 frames arriving in chunks of
--stream-chunk frames (generated chunk by chunk, never whole in memory) against one full pass
over a 33-frame clip. Weights are seeded random where not loaded from files (timing and memory do
not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
Fn = Callable[[Any], Any]


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


def official_eager(name: str, official_path: str | None) -> Any:
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


def _native(job: dict[str, Any]) -> Any:
    import tokenizer_core as tc

    if job.get("jit_dir"):
        return tc.from_pretrained(job["preset"], checkpoint=Path(job["jit_dir"]) / job["preset"])
    return tc.from_pretrained(job["preset"], init="random")


def _implementation(impl: str, native: Any, job: dict[str, Any]) -> tuple[Fn, Fn]:
    """(encode fn, decode fn) of `impl` holding `native`'s weights; decode takes native's encode output."""
    import torch

    if impl == "native":
        return native.encode, native.decode
    if impl == "eager":
        ref = official_eager(native.config.name, job.get("official_path"))
        ref.load_state_dict({k: v.contiguous() for k, v in native.state_dict().items()}, strict=True)
        if native.config.discrete:
            ref.quantizer.dtype = torch.float32
            return (lambda v: ref.encode(v)[0]), (lambda z: ref.decode_code(z))
        return (lambda v: ref.encode(v)[0]), (lambda z: ref.decode(z))
    if impl == "jit":
        folder = Path(job["jit_dir"]) / native.config.name
    else:  # "jit-of-native": tokenmill's own module traced into the official file layout
        from tokenizer_core.official import export_official_jit

        folder = Path(tempfile.mkdtemp(prefix="bench-jit-"))
        x = torch.zeros(1, 3, 17, 64, 64)
        export_official_jit(native, folder, x, autoencoder=False)
    enc, dec = torch.jit.load(str(folder / "encoder.jit")), torch.jit.load(str(folder / "decoder.jit"))
    return (lambda v: enc(v)[0]), (lambda z: dec(z))


def _call(fn: Fn, arg: Any) -> tuple[float, float]:
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        fn(arg)
    return time.perf_counter() - t0, time.process_time() - c0


def _setup(job: dict[str, Any], impls: list[str]) -> tuple[dict[str, Fn], Any]:
    """The op's function per implementation, and its input (a video, or native's encode output)."""
    import torch

    torch.set_num_threads(job["threads"])
    native = _native(job)
    t, h, w = job["shape"]
    x = torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    arg = native.encode(x) if job["op"] == "decode" else x
    pick = 0 if job["op"] == "encode" else 1
    fns = {impl: _implementation(impl, native, job)[pick] for impl in impls}
    if "native" not in impls:
        del native  # a memory worker holds only the implementation it measures
    return fns, arg


def time_worker(job: dict[str, Any]) -> dict[str, Any]:
    fns, arg = _setup(job, job["impls"])
    for fn in fns.values():
        for _ in range(2):
            _call(fn, arg)  # warm-up in the mode it is timed in (no_grad): TorchScript profiles per mode
    runs: dict[str, list[tuple[float, float]]] = {impl: [] for impl in fns}
    order = list(fns)
    for r in range(job["repeat"]):
        for impl in order[r % len(order):] + order[: r % len(order)]:
            runs[impl].append(_call(fns[impl], arg))
    out: dict[str, Any] = {}
    for impl, values in runs.items():
        out[impl] = {"wall_s": statistics.median(v[0] for v in values),
                     "cpu_s": statistics.median(v[1] for v in values)}
        if impl != "native":
            out[impl]["speedup_wall"] = statistics.median(a[0] / b[0] for a, b in zip(values, runs["native"], strict=True))
            out[impl]["speedup_cpu"] = statistics.median(a[1] / b[1] for a, b in zip(values, runs["native"], strict=True))
    return out


def memory_worker(job: dict[str, Any]) -> dict[str, Any]:
    fns, arg = _setup(job, [job["impl"]])
    fn = fns[job["impl"]]
    _call(fn, arg)  # warm-up (oneDNN primitives, the TorchScript profiling run), as measured: no_grad
    before = _rss_kib("VmRSS")
    _reset_peak()
    _call(fn, arg)
    return {"peak_mib": (_rss_kib("VmHWM") - before) / 1024, "rss_mib": _rss_kib("VmHWM") / 1024}


def stream_worker(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    import tokenizer_core as tc

    torch.set_num_threads(job["threads"])
    native = tc.from_pretrained(job["preset"], init="random")
    t, h, w = job["shape"]
    chunk = job["chunk"]

    def chunks() -> Any:  # a long video arriving chunk by chunk (as from a decoder)
        gen = torch.Generator().manual_seed(0)
        for n in [1 + chunk] + [chunk] * ((t - 1 - chunk) // chunk):
            yield torch.rand(1, 3, n, h, w, generator=gen) * 2 - 1

    if job["mode"] == "full":
        x = torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
        run: Callable[[], Any] = lambda: native.encode(x)  # noqa: E731
    else:
        run = lambda: list(native.encode_stream(chunks()))  # noqa: E731
    run()  # warm-up
    before = _rss_kib("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    run()
    return {"wall_s": time.perf_counter() - t0, "peak_mib": (_rss_kib("VmHWM") - before) / 1024}


WORKERS = {"time": time_worker, "memory": memory_worker, "stream": stream_worker}


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


def _eager_available(path: str | None) -> bool:
    code = "import sys, types; sys.modules.setdefault('loguru', types.SimpleNamespace(logger=None)); " \
           "import cosmos_tokenizer.networks"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=False).returncode == 0


def _jit_dir(arg: str | None, presets: list[str]) -> str | None:
    folder = arg or os.environ.get("TOKENMILL_OFFICIAL_JIT")
    if not folder:
        return None
    missing = [p for p in presets for f in ("encoder.jit", "decoder.jit") if not (Path(folder) / p / f).is_file()]
    if missing:
        raise SystemExit(f"--jit-dir {folder}: missing {', '.join(missing[:4])} (need <preset>/encoder.jit, decoder.jit)")
    return folder


def compare(args: argparse.Namespace, base: dict[str, Any], refs: list[str]) -> list[dict[str, Any]]:
    rows = []
    for preset in args.presets:
        for shape_text in args.shapes:
            for op in args.ops:
                job = {**base, "preset": preset, "shape": [int(v) for v in shape_text.split("x")], "op": op}
                row: dict[str, Any] = {"preset": preset, "shape": shape_text, "op": op,
                                       **_run({**job, "kind": "time", "impls": ["native", *refs]})}
                for impl in ["native", *refs]:
                    row[impl].update(_run({**job, "kind": "memory", "impl": impl}))
                for impl in refs:
                    row[impl]["memory_ratio"] = row["native"]["peak_mib"] / max(row[impl]["peak_mib"], 1e-9)
                rows.append(row)
                cells = " | ".join(
                    f"vs {impl}: {row[impl]['wall_s']:.2f}s {row[impl]['peak_mib']:.0f}MiB, speedup wall "
                    f"{row[impl]['speedup_wall']:.2f} cpu {row[impl]['speedup_cpu']:.2f}, memory "
                    f"{row[impl]['memory_ratio']:.2f}" for impl in refs)
                print(f"{preset:10s} {shape_text:11s} {op:6s} native {row['native']['wall_s']:.2f}s "
                      f"{row['native']['peak_mib']:.0f}MiB | {cells}", flush=True)
    return rows


def stream(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    h, w = (int(v) for v in args.stream_shape.split("x"))
    job = {**base, "preset": args.stream_preset, "kind": "stream", "chunk": args.stream_chunk}
    short = _run({**job, "shape": [33, h, w], "mode": "full"})
    long = _run({**job, "shape": [257, h, w], "mode": "chunks"})
    ratio = long["peak_mib"] / max(short["peak_mib"], 1e-9)
    print(f"streaming {args.stream_preset} {args.stream_shape}: 33 frames full {short['peak_mib']:.0f}MiB "
          f"{short['wall_s']:.1f}s | 257 frames streamed in chunks of {args.stream_chunk} "
          f"{long['peak_mib']:.0f}MiB {long['wall_s']:.1f}s | memory ratio {ratio:.2f}", flush=True)
    return {"stream": args.stream_preset, "shape": args.stream_shape, "full_33": short, "stream_257": long,
            "memory_ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--jit-dir", default=None, help="folder of <preset>/encoder.jit, decoder.jit "
                        "(default $TOKENMILL_OFFICIAL_JIT)")
    parser.add_argument("--official-path", default=None, help="folder holding NVIDIA's cosmos_tokenizer package")
    parser.add_argument("--presets", nargs="+", default=["CV8x8x8", "DV8x16x16"])
    parser.add_argument("--shapes", nargs="+", default=["17x256x256"])
    parser.add_argument("--ops", nargs="+", default=["encode", "decode"], choices=["encode", "decode"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stream-preset", default="CV8x8x8")
    parser.add_argument("--stream-shape", default="256x256")
    parser.add_argument("--stream-chunk", type=int, default=16, help="frames per streamed chunk (multiple of t)")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(WORKERS[job["kind"]](job)))
        return
    jit_dir = _jit_dir(args.jit_dir, args.presets)
    refs = ["jit" if jit_dir else "jit-of-native"] + (["eager"] if _eager_available(args.official_path) else [])
    print(f"references: {', '.join(refs)}{f' (jit files: {jit_dir})' if jit_dir else ''}; "
          f"threads={args.threads}; repeat={args.repeat}", flush=True)
    base = {"threads": args.threads, "repeat": args.repeat, "official_path": args.official_path, "jit_dir": jit_dir}
    results: list[dict[str, Any]] = [] if args.skip_compare else compare(args, base, refs)
    if not args.skip_stream:
        results.append(stream(args, base))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
