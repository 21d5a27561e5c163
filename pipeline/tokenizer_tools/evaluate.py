"""`tokenmill eval`: reconstruction quality of a tokenizer against the same-grid baseline.

    tokenmill eval --tokenizer SPEC --shards URLS [--num-frames N] [--resolution H W]
                   [--max-clips N] [--refine-steps N] [--json]

Clips are cut from the shards by the same data plane as a job (resize shorter side, centre
crop, consecutive non-overlapping clips). Each clip is encoded and decoded by the tokenizer;
the result and the same-grid baseline (tokenizer_core.metrics) are scored against the
original with PSNR and SSIM over all frames on [0, 255] RGB. Means are over clips.
`--refine-steps N` encodes as a job with `tokenizer.refine_steps: N` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from schemas.config import SpecError

log = logging.getLogger(__name__)


def iter_eval_clips(shards: str | list[str], num_frames: int, resolution: tuple[int, int],
                    storage_options: dict[str, Any] | None = None) -> Iterator[Any]:
    """Clips (pipeline.records.Clip) of every shard, through the job's data plane; clip keys use
    the job's shard ids, so the same `shards` pattern names a clip here as in a job's output."""
    from pipeline.readers.sources import resolve_shards
    from pipeline.readers.stages import iter_shard
    from pipeline.records import Clip, ShardStats
    from schemas.jobspec import ClipSpec

    spec = ClipSpec(num_frames=num_frames, resolution=resolution)
    for shard in resolve_shards(shards, storage_options):
        for item in iter_shard(shard.url, spec, storage_options, ShardStats(), isolate=False, shard=shard.id):
            if isinstance(item, Clip):
                yield item
            else:
                log.warning("skipping %s/%s: %s", item.source_url, item.sample_key, item.message)


def score_clip(tok: Any, frames: Any, refine_steps: int = 0) -> dict[str, float]:
    """PSNR/SSIM of the tokenizer's round trip and of the baseline for one uint8 [T, H, W, 3] clip."""
    return score_round_trip(tok, frames, refine_steps)[0]


def score_round_trip(tok: Any, frames: Any, refine_steps: int = 0) -> tuple[dict[str, float], Any]:
    """`score_clip`'s scores and the reconstruction they score, uint8-valued float [3, T, H, W]."""
    import torch

    from tokenizer_core import metrics

    original = metrics.from_uint8_frames(torch.as_tensor(frames))  # [3, T, H, W] on [0, 255]
    video = (original / 127.5 - 1.0).unsqueeze(0).to(device=tok.device, dtype=tok.dtype)
    with torch.inference_mode():
        recon = tok.decode(tok.encode(video, refine_steps=refine_steps) if refine_steps else tok.encode(video))
    recon = metrics.to_pixels(recon[0].cpu())
    t, s = tok.config.temporal_compression, tok.config.spatial_compression
    baseline = metrics.same_grid_baseline(original, t, s)
    scores = {
        "psnr": metrics.psnr(original, recon),
        "ssim": metrics.ssim(original, recon),
        "baseline_psnr": metrics.psnr(original, baseline),
        "baseline_ssim": metrics.ssim(original, baseline),
    }
    return scores, recon


def evaluate(tok: Any, clips: Iterable[Any], max_clips: int | None = None, refine_steps: int = 0) -> dict[str, Any]:
    """Score clips (objects with key/source_url/sample_key/start_frame/frames); means over clips."""
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for clip in clips:
        if max_clips is not None and len(rows) >= max_clips:
            break
        scores = score_clip(tok, clip.frames, refine_steps)
        rows.append({"key": clip.key, "source_url": clip.source_url, "sample_key": clip.sample_key,
                     "start_frame": clip.start_frame, **{k: round(v, 4) for k, v in scores.items()}})
        log.info("%s: psnr %.2f (baseline %.2f)", clip.key, scores["psnr"], scores["baseline_psnr"])
    result: dict[str, Any] = {"tokenizer": tok.config.name, "clips": len(rows), "refine_steps": refine_steps}
    for name in ("psnr", "ssim", "baseline_psnr", "baseline_ssim"):
        result[name] = round(sum(r[name] for r in rows) / len(rows), 4) if rows else None
    if rows:
        result["psnr_gain_db"] = round(result["psnr"] - result["baseline_psnr"], 4)
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["per_clip"] = rows
    return result


def _check_shape(config: Any, num_frames: int, resolution: tuple[int, int]) -> None:
    t, s = config.temporal_compression, config.spatial_compression
    if (num_frames - 1) % t:
        raise SpecError("--num-frames", f"must be 1 + k * {t} for {config.name}, got {num_frames}")
    if resolution[0] % s or resolution[1] % s:
        raise SpecError("--resolution", f"must be multiples of {s} for {config.name}, got {list(resolution)}")


def load_tokenizer(spec: str) -> Any:
    """from_pretrained with the device chosen automatically; bad specs become SpecError."""
    import torch

    import tokenizer_core

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return tokenizer_core.from_pretrained(spec, device=device)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise SpecError("--tokenizer", str(exc)) from None


def _print_table(result: dict[str, Any]) -> None:
    print(f"{'clip':<48} {'psnr':>7} {'ssim':>6} {'base_psnr':>9} {'base_ssim':>9}")
    for r in result["per_clip"]:
        print(f"{r['key'][:48]:<48} {r['psnr']:7.2f} {r['ssim']:6.3f} {r['baseline_psnr']:9.2f} "
              f"{r['baseline_ssim']:9.3f}")
    print(f"{'mean over ' + str(result['clips']) + ' clips':<48} {result['psnr']:7.2f} {result['ssim']:6.3f} "
          f"{result['baseline_psnr']:9.2f} {result['baseline_ssim']:9.3f}")
    print(f"tokenizer {result['tokenizer']}: {result['psnr_gain_db']:+.2f} dB vs the same-grid baseline")


def cli_eval(args: argparse.Namespace) -> int:
    from tokenizer_core.model import refine_problem

    resolution = (int(args.resolution[0]), int(args.resolution[1]))
    if args.max_clips is not None and args.max_clips < 1:
        raise SpecError("--max-clips", "must be >= 1")
    if args.refine_steps < 0:
        raise SpecError("--refine-steps", "must be >= 0")
    tok = load_tokenizer(args.tokenizer)
    _check_shape(tok.config, args.num_frames, resolution)
    if args.refine_steps and (problem := refine_problem(tok)):
        raise SpecError("--refine-steps", problem)
    clips = iter_eval_clips(list(args.shards), args.num_frames, resolution)
    result = evaluate(tok, clips, args.max_clips, args.refine_steps)
    result.update(num_frames=args.num_frames, resolution=list(resolution))
    if result["clips"] == 0:
        print(f"tokenmill eval: no clip of {args.num_frames} frames in {args.shards}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0
