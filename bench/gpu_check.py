"""The device check: tokenmill's CUDA path measured on one GPU in under 8 minutes.

    bench/gpu_check.sh [OUT_DIR] [--quick] [--cpu] [--budget-s S] [--jit-dir DIR] [--sections ...]

Imports only torch, numpy, opencv (the decode pool), tokenizer_core and jobs.batch_encoder /
jobs.actors: no Ray, PyAV, decord, webdataset, pydantic or network. Writes OUT_DIR/gpu_check.json
and gpu_check.md after every section, so a run cut short still reports what it measured.

  parity      CUDA vs CPU on real clips (data/sample, decoded with opencv): share of equal ids
              (discrete) or latent max |difference| (continuous), fp32 with TF32 off and on;
              bf16 vs fp32 on the card. Seeded random weights, and the trained DV4x8x8-mill.
  throughput  encode frames/s and peak GPU memory (above weights + input), batch 1, for CV8x8x8,
              DV8x16x16, DV4x8x8 at 17x256x256, 33x512x512, 17x704x1280: native bf16, native fp32
              (TF32) and the released JIT form in bf16. JIT files: NVIDIA's from --jit-dir
              (DIR/<name>/encoder.jit, a git-ignored folder, never committed; native then loads the
              same weights from it) or else traced here from the same random weights with
              tokenizer_core.official.export_official_jit, weights in NCDHW as in the release.
  sweep       DV8x16x16 bf16 at 17x256x256, batch 1..32: frames/s and peak; the auto batch size.
  refine      the trained DV4x8x8-mill on 4 real clips, fp32: plain encode against `refine_steps`
              (50) encode, seconds and the PSNR of each decode (docs/tokenizer.md, "Refined encoding").
  actor       the actor's batch encoder (jobs.actors.TokenizerWorker, auto batch) fed from memory
              with 1 and 3 batches in flight, then by a CPU decode pool (multiprocessing, opencv):
              busy = compute-stream time / wall time, and frames/s; the pool's decode-only rate.

`--cpu --quick` rehearses every section on the CPU with tiny models and sizes (a minute or two):
"cuda" sides then run on the CPU too, so the figures mean nothing, but every code path runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tokenizer_core  # noqa: E402
from jobs.actors import ActorSettings, TokenizerWorker  # noqa: E402
from jobs.batch_encoder import BatchEncoder, EncodeOptions, configure_cuda, probe_batch_size  # noqa: E402
from tokenizer_core.official import JitTokenizer, export_official_jit  # noqa: E402

Shape = tuple[int, int, int]  # (T, H, W)


@dataclass(frozen=True)
class Sizes:
    models: list[str]
    shapes: list[Shape]
    parity_shape: Shape
    sweep: list[int]
    actor_model: str
    actor_shape: Shape
    actor_seconds: float  # each actor run feeds batches for this long
    refine_shape: Shape
    refine_steps: int
    min_time_s: float  # a throughput measurement repeats until it has run this long (5 calls at most)


FULL = Sizes(["CV8x8x8", "DV8x16x16", "DV4x8x8"], [(17, 256, 256), (33, 512, 512), (17, 704, 1280)],
             (17, 256, 256), [1, 2, 4, 8, 16, 32], "DV8x16x16", (17, 256, 256), 20.0, (17, 256, 256), 50, 1.0)
QUICK = Sizes(["CV8x8x8-tiny", "DV8x16x16-tiny", "DV4x8x8-tiny"], [(9, 32, 32)], (9, 32, 32), [1, 2],
              "DV8x16x16-tiny", (9, 32, 32), 1.0, (5, 32, 32), 2, 0.0)
TRAINED = "DV4x8x8-mill"


class Check:
    """Results, deadline and the device under test; `save` rewrites the JSON and markdown."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cfg = QUICK if args.quick else FULL
        if args.models:
            self.cfg = replace(self.cfg, models=args.models, actor_model=args.models[0])
        self.device = "cpu" if args.cpu else "cuda"
        self.deadline = time.monotonic() + args.budget_s
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {"env": environment(self.device), "args": vars(args)}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1, default=str))
        (self.out / "gpu_check.md").write_text(markdown(self.results))


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpus": os.cpu_count(), "device": device}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(card=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version(), sms=props.multi_processor_count)
    return env


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def free(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------- real clips
def sample_videos(folder: Path) -> list[Path]:
    """The bundled sample shards' .mp4 members, written out for opencv (it reads files)."""
    paths = []
    for shard in sorted((REPO / "data" / "sample").glob("shards-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".mp4"):
                    path = folder / member.name
                    path.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
                    paths.append(path)
    if not paths:
        raise FileNotFoundError(f"no sample videos under {REPO / 'data' / 'sample'}")
    return paths


def decode_clips(task: tuple[str, int, int, int]) -> list[np.ndarray]:
    """One video -> its consecutive clips uint8 [T, H, W, 3] (RGB): shorter side scaled to cover
    (H, W) with area averaging, centre crop; what pipeline/readers does, with opencv."""
    import cv2

    path, t, h, w = task
    cap = cv2.VideoCapture(path)
    frames: list[np.ndarray] = []
    clips = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        fh, fw = frame.shape[:2]
        scale = max(h / fh, w / fw)
        size = (max(w, math.ceil(fw * scale)), max(h, math.ceil(fh * scale)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        top, left = (size[1] - h) // 2, (size[0] - w) // 2
        frames.append(cv2.cvtColor(frame[top:top + h, left:left + w], cv2.COLOR_BGR2RGB))
        if len(frames) == t:
            clips.append(np.stack(frames))
            frames = []
    cap.release()
    return clips


def _pool_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one core per decode process, as a shard task's decoder


def to_video(frames: np.ndarray, device: str, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> [B, 3, T, H, W] in [-1, 1] (contiguous NCDHW), as a user passes it."""
    x = torch.from_numpy(frames).to(device).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)
    return x.to(dtype).contiguous()


# ---------------------------------------------------------------------------------- sections
def load(name: str, device: str, dtype: torch.dtype, jit_dir: str | None) -> Any:
    official = Path(jit_dir) / name if jit_dir else None
    if official is not None and (official / "encoder.jit").is_file():
        return tokenizer_core.from_pretrained(official, device=device, dtype=dtype)
    init = "pretrained" if name == TRAINED else "random"
    return tokenizer_core.from_pretrained(name, device=device, dtype=dtype, init=init)  # type: ignore[arg-type]


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    if a.dtype == torch.int64:
        return {"ids_equal": float((a.cpu() == b.cpu()).float().mean())}
    a, b = a.float().cpu(), b.float().cpu()
    return {"latent_max_diff": float((a - b).abs().max()), "latent_scale": float(b.abs().max())}


def parity(check: Check) -> dict[str, Any]:
    t, h, w = check.cfg.parity_shape
    with tempfile.TemporaryDirectory() as tmp:
        clips = decode_clips((str(sample_videos(Path(tmp))[0]), t, h, w))[:1]
    frames = np.stack(clips)
    out: dict[str, Any] = {"shape": [t, h, w], "clips": len(clips)}
    for name in [*check.cfg.models, TRAINED]:
        if check.left() < 0:
            out[name] = "skipped: time budget"
            continue
        cpu = load(name, "cpu", torch.float32, check.args.jit_dir)
        if (t - 1) % cpu.config.temporal_compression:
            continue
        ref = cpu.encode(to_video(frames, "cpu", torch.float32))
        del cpu
        row: dict[str, Any] = {}
        results = {}
        for label, dtype, tf32 in (("fp32", torch.float32, False), ("fp32_tf32", torch.float32, True),
                                   ("bf16", torch.bfloat16, True)):
            if check.device == "cuda":
                configure_cuda(tf32)
            tok = load(name, check.device, dtype, check.args.jit_dir)
            results[label] = tok.encode(to_video(frames, check.device, dtype))
            row[f"{label}_vs_cpu"] = compare(results[label], ref)
            del tok
            free(check.device)
        row["bf16_vs_fp32"] = compare(results["bf16"], results["fp32"])
        out[name] = row
    return out


def timed(fn: Callable[[], Any], device: str, min_s: float, max_reps: int = 5) -> dict[str, Any]:
    """Warm-up call (cuDNN picks its algorithms), then timed calls; peak memory above the start."""
    sync(device)
    base = torch.cuda.memory_allocated() if device == "cuda" else 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fn()
    sync(device)
    times: list[float] = []
    while len(times) < 2 or (sum(times) < min_s and len(times) < max_reps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else None
    return {"seconds": statistics.median(times), "reps": len(times), "peak_mib": peak}


def jit_form(tok: Any, name: str, check: Check, dtype: torch.dtype, folder: Path) -> JitTokenizer:
    """NVIDIA's files from --jit-dir, or `tok` traced on the device the way the release is made."""
    official = Path(check.args.jit_dir) / name if check.args.jit_dir else None
    if official is not None and (official / "encoder.jit").is_file():
        return JitTokenizer.load(official, name).to(check.device, dtype).eval()
    plain = copy.deepcopy(tok)
    for param in plain.parameters():  # the released files hold NCDHW weights, not our channels-last
        param.data = param.data.contiguous()
    t = plain.config.temporal_compression
    s = plain.config.spatial_compression
    example = torch.zeros(1, 3, 1 + t, 4 * s, 4 * s, device=check.device, dtype=dtype)
    export_official_jit(plain, folder, example, autoencoder=False)
    return JitTokenizer.load(folder, name).to(check.device, dtype).eval()


IMPLS = {"native_bf16": torch.bfloat16, "jit_bf16": torch.bfloat16, "native_fp32_tf32": torch.float32}


def _error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def throughput(check: Check) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    check.results["throughput"] = {"rows": rows}
    if check.device == "cuda":
        configure_cuda(True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in check.cfg.models:
            shapes = [s for s in reversed(check.cfg.shapes)  # the goal shape (the largest) first
                      if (s[0] - 1) % tokenizer_core.preset_config(name).temporal_compression == 0]
            for impl, dtype in IMPLS.items():
                base = {"model": name, "impl": impl}
                if check.left() < 0:
                    rows.extend({**base, "shape": "x".join(map(str, s)), "error": "skipped: time budget"}
                                for s in shapes)
                    continue
                try:
                    model, native = implementation(check, name, impl, dtype, Path(tmp) / f"{name}-{impl}")
                except Exception as exc:  # noqa: BLE001 - a failed load or trace is a result
                    rows.append({**base, "error": _error(exc)})
                    continue
                for shape in shapes:
                    row: dict[str, Any] = {**base, "shape": "x".join(map(str, shape))}
                    rows.append(row)
                    try:
                        row.update(measure(check, model, native, shape, dtype) if check.left() > 0
                                   else {"error": "skipped: time budget"})
                    except Exception as exc:  # noqa: BLE001 - an OOM is a result
                        row["error"] = _error(exc)
                    free(check.device)  # the failed call's tensors died with its frame
                del model, native
                free(check.device)
                check.save()
    return {"rows": rows}


def implementation(check: Check, name: str, impl: str, dtype: torch.dtype, folder: Path) -> tuple[Any, Any]:
    """(model to time, native model to compare its ids with, or None)."""
    tok = load(name, check.device, dtype, check.args.jit_dir)
    if impl.startswith("native"):
        return tok, None
    return jit_form(tok, name, check, dtype, folder), tok


def measure(check: Check, model: Any, native: Any, shape: Shape, dtype: torch.dtype) -> dict[str, Any]:
    """frames/s and peak memory of `model.encode` at batch 1 (and its ids against `native`'s)."""
    t, h, w = shape
    frames = np.random.default_rng(0).integers(0, 256, (1, t, h, w, 3), dtype=np.uint8)
    x = to_video(frames, check.device, dtype)
    row: dict[str, Any] = {}
    if native is None:
        x = x.contiguous(memory_format=torch.channels_last_3d)  # what the actor hands the model
    else:
        row.update({f"vs_native_{k}": v for k, v in compare(model.encode(x), native.encode(x)).items()})
    result = timed(partial(model.encode, x), check.device, check.cfg.min_time_s)
    return {**row, **result, "frames_per_s": t / result["seconds"]}


def sweep(check: Check) -> dict[str, Any]:
    name = check.cfg.actor_model
    t, h, w = check.cfg.actor_shape
    dtype = torch.bfloat16
    if check.device == "cuda":
        configure_cuda(True)
    tok = load(name, check.device, dtype, None)
    encoder = BatchEncoder(tok, EncodeOptions(check.device))
    auto, probe = probe_batch_size(encoder, (t, h, w))
    rows = []
    for batch in sorted({*check.cfg.sweep, auto}):
        if check.left() < 0:
            rows.append({"batch": batch, "error": "skipped: time budget"})
            break
        x = to_video(np.zeros((batch, t, h, w, 3), np.uint8), check.device, dtype)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        try:
            result = timed(partial(tok.encode, x), check.device, check.cfg.min_time_s, max_reps=3)
            rows.append({"batch": batch, **result, "frames_per_s": batch * t / result["seconds"]})
        except torch.cuda.OutOfMemoryError:
            rows.append({"batch": batch, "error": "CUDA out of memory"})
            break
        finally:
            del x
            free(check.device)
    return {"model": name, "shape": f"{t}x{h}x{w}", "dtype": "bfloat16", "auto_batch": auto, "probe": probe,
            "rows": rows}


def run_pipeline(encoder: BatchEncoder, batches: Iterator[np.ndarray], depth: int, seconds: float) -> dict[str, Any]:
    """Feed `batches` for `seconds` through `encoder.map_timed` with `depth` in flight; the clock
    starts at the first batch (a decode pool's start-up is not the pipeline's). busy = compute / wall."""
    first: list[float] = []

    def timed_feed() -> Iterator[np.ndarray]:
        for frames in batches:
            now = time.perf_counter()
            if not first:
                first.append(now)
            elif now > first[0] + seconds:
                return
            yield frames

    compute, frames, count = 0.0, 0, 0
    for _result, timing in encoder.map_timed(timed_feed(), depth):
        compute += timing.compute_s
        frames += timing.frames
        count += 1
    wall = time.perf_counter() - first[0] if first else 0.0
    return {"depth": depth, "batches": count, "wall_s": wall, "busy": compute / wall if wall else 0.0,
            "frames_per_s": frames / wall if wall else 0.0}


def batched(clips: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    group: list[np.ndarray] = []
    for clip in clips:
        group.append(clip)
        if len(group) == size:
            yield np.stack(group)
            group = []


def pool_clips(pool: Any, tasks: list[Any], count: int, pending: int) -> Iterator[np.ndarray]:
    """Clips from `count` decode tasks (cycling over `tasks`), at most `pending` tasks queued: a
    consumer slower than the pool does not pile decoded frames up in memory."""
    queue: deque[Any] = deque()
    submitted = 0
    while queue or submitted < count:
        while submitted < count and len(queue) < pending:
            queue.append(pool.apply_async(decode_clips, (tasks[submitted % len(tasks)],)))
            submitted += 1
        yield from queue.popleft().get()


def refine(check: Check) -> dict[str, Any]:
    from tokenizer_core import metrics

    t, h, w = check.cfg.refine_shape
    with tempfile.TemporaryDirectory() as tmp:
        clips = [c for p in sample_videos(Path(tmp)) for c in decode_clips((str(p), t, h, w))[:1]][:4]
    video = to_video(np.stack(clips), check.device, torch.float32)
    original = metrics.from_uint8_frames(torch.as_tensor(np.concatenate(clips)))  # clips one after another
    tok = load(TRAINED, check.device, torch.float32, None)
    out: dict[str, Any] = {"model": TRAINED, "shape": f"{t}x{h}x{w}", "clips": len(clips), "rows": []}
    for steps in (0, check.cfg.refine_steps):
        ids = tok.encode(video, refine_steps=steps)  # also the warm-up
        sync(check.device)
        start = time.perf_counter()
        tok.encode(video, refine_steps=steps)
        sync(check.device)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            recon = metrics.to_pixels(torch.cat(list(tok.decode(ids).float().cpu()), dim=1))
        out["rows"].append({"refine_steps": steps, "seconds": seconds, "psnr": metrics.psnr(original, recon)})
    plain, refined = out["rows"]
    out["time_ratio"] = refined["seconds"] / plain["seconds"]
    return out


def actor(check: Check) -> dict[str, Any]:
    name, (t, h, w) = check.cfg.actor_model, check.cfg.actor_shape
    cuda = check.device == "cuda"
    settings = ActorSettings(name, None, "random", "auto", check.device, num_gpus=1 if cuda else 0, num_cpus=1,
                             torch_threads=torch.get_num_threads(), batches_per_actor=3, clip_shape=(t, h, w))
    worker = TokenizerWorker(settings)
    size, seconds = int(worker.batch_size or 4), check.cfg.actor_seconds
    out: dict[str, Any] = {"model": name, "shape": f"{t}x{h}x{w}", "dtype": worker.stats()["dtype"],
                           "batch_size": size, "probe": worker.batch_probe, "runs": []}
    workers = max(1, (os.cpu_count() or 2) - 2)
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [(str(p), t, h, w) for p in sample_videos(Path(tmp))]
        clips = [c for task in tasks for c in decode_clips(task)]

        ring = [np.stack([clips[(i * size + j) % len(clips)] for j in range(size)]) for i in range(4)]

        def from_memory() -> Iterator[np.ndarray]:
            while True:
                yield from ring

        worker.encoder.encode(ring[0])  # warm-up: cuDNN algorithms for this shape
        for depth in (1, 3):
            out["runs"].append({"feed": "memory", **run_pipeline(worker.encoder, from_memory(), depth, seconds)})
        with mp.get_context("spawn").Pool(workers, initializer=_pool_init) as pool:
            for _ in pool_clips(pool, tasks, workers, workers):  # start-up: every process has imported
                pass
            start = time.perf_counter()
            decoded = sum(len(c) for c in pool_clips(pool, tasks, 2 * workers, 2 * workers))
            out["decode_only"] = {"workers": workers, "frames_per_s": decoded * t / (time.perf_counter() - start)}
            feed = batched(pool_clips(pool, tasks, 10**9, 2 * workers), size)
            run = run_pipeline(worker.encoder, feed, 3, seconds)
            out["runs"].append({"feed": f"decode pool ({workers} processes)", **run})
            pool.terminate()
    return out


# ---------------------------------------------------------------------------------- report
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return lines + [""]


def _cell(v: dict[str, float]) -> str:
    if "ids_equal" in v:
        return f"{v['ids_equal']:.4f}"
    return f"{v['latent_max_diff']:.3g} / {v['latent_scale']:.3g}"


def markdown(res: dict[str, Any]) -> str:
    env = res["env"]
    lines = ["# tokenmill device check", "", f"`{json.dumps(env)}`", ""]
    if "parity" in res:
        p = res["parity"]
        lines += [f"## Parity ({p.get('shape')}, one real clip): share of equal ids, or latent max |diff| / max |latent|", ""]
        rows = [{"model": k, **{c: _cell(v) for c, v in r.items()}} for k, r in p.items() if isinstance(r, dict)]
        lines += _table(rows, ["model", "fp32_vs_cpu", "fp32_tf32_vs_cpu", "bf16_vs_cpu", "bf16_vs_fp32"])
    if "throughput" in res:
        rows = res["throughput"]["rows"]
        lines += ["## Encode throughput (batch 1)", ""]
        lines += _table(rows, ["model", "shape", "impl", "frames_per_s", "peak_mib", "seconds", "reps",
                               "vs_native_ids_equal", "vs_native_latent_max_diff", "error"])
    if "sweep" in res:
        s = res["sweep"]
        lines += [f"## Batch sweep ({s['model']}, {s['shape']}, bf16; auto batch = {s['auto_batch']})", ""]
        lines += _table(s["rows"], ["batch", "frames_per_s", "peak_mib", "seconds", "error"])
    if "refine" in res:
        r = res["refine"]
        lines += [f"## Refined encoding ({r['model']}, {r['shape']}, fp32, {r['clips']} clips in one batch)", ""]
        lines += _table(r["rows"], ["refine_steps", "seconds", "psnr"]) + [f"time ratio: {r['time_ratio']:.1f}", ""]
    if "actor" in res:
        a = res["actor"]
        lines += [f"## Actor pipeline ({a['model']}, {a['shape']}, {a['dtype']}, batch {a['batch_size']})", "",
                  f"decode pool alone: {json.dumps(a.get('decode_only'))}", ""]
        lines += _table(a["runs"], ["feed", "depth", "batches", "wall_s", "busy", "frames_per_s"])
    for section, err in res.get("errors", {}).items():
        lines += [f"## {section}: failed", "", "```", err, "```", ""]
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[Check], dict[str, Any]]] = {
    "parity": parity, "throughput": throughput, "sweep": sweep, "refine": refine, "actor": actor}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "out" / "gpu_check"))
    p.add_argument("--cpu", action="store_true", help="run on the CPU (the rehearsal)")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting measurements after this")
    p.add_argument("--jit-dir", default=None, help="folder of NVIDIA's released <name>/encoder.jit files")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--models", nargs="+", default=None, help="presets to measure (the first also for sweep "
                                                                 "and actor)")
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print(f"gpu_check: torch {torch.__version__} sees no CUDA device (use --cpu to rehearse)", file=sys.stderr)
        return 2
    if args.cpu:
        torch.set_num_threads(os.cpu_count() or 1)
    check = Check(args)
    check.save()
    for name in args.sections:
        started = time.perf_counter()
        try:
            check.results[name] = SECTIONS[name](check)
        except Exception:  # noqa: BLE001 - report the failure, run the other sections
            check.results.setdefault("errors", {})[name] = traceback.format_exc()[-3000:]
        print(f"gpu_check: {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        check.save()
    print(f"gpu_check: wrote {check.out / 'gpu_check.json'} and {check.out / 'gpu_check.md'}", file=sys.stderr)
    return 1 if check.results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
