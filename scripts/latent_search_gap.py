"""How far a tokenizer's encoder lies from the best latent for its own decoder, and what the
causal refinement (`refine_steps`) recovers of it. Each clip is coded three ways and scored:
by the encoder alone; with each latent frame refined in order against its own frames, the
earlier ones fixed (`encode(video, refine_steps=N)`: the tokens stay causal); and with the whole
clip's latent searched at once (a bound: a latent frame then also moves for later frames, so the
tokens are not causal). All use Adam on the latent through the decoder and the rounding.

    python scripts/latent_search_gap.py TOKENIZER --shards PATTERNS... [--steps 50] [--clips N]
        [--no-search] [--json OUT]

Token statistics of the plain and refined ids, pooled over the clips, say what a model trained on
the tokens would face: `temporal_repeat`, the share of ids equal to the one a latent frame
earlier at the same place, and `bits_per_token_given_previous`, the conditional entropy of each
FSQ digit given the same digit a latent frame earlier, summed over the digits (bits per token).

Measured on the bundled DV4x8x8-mill (stage eleven), 50 steps, the 16 clips of data/val at
17x256x256: the refinement +0.81 dB, the whole-clip search +0.98 dB (docs/training.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokenizer", help="a tokenmill checkpoint or export, or a bundled model's name (FSQ)")
    parser.add_argument("--shards", required=True, nargs="+", help="footage to measure on (shard patterns)")
    parser.add_argument("--steps", type=int, default=50, help="Adam steps of the search (default 50)")
    parser.add_argument("--lr", type=float, default=0.03, help="step size of the search, in latent units")
    parser.add_argument("--clips", type=int, default=None, help="at most this many clips (default: all)")
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--resolution", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    parser.add_argument("--no-search", action="store_true", help="skip the whole-clip search (the bound)")
    parser.add_argument("--json", help="also write the per-clip figures here")
    args = parser.parse_args(argv)
    if args.steps < 1 or (args.clips is not None and args.clips < 1):
        parser.error("--steps and --clips must be at least 1")
    import tokenizer_core
    from pipeline.tokenizer_tools.evaluate import iter_eval_clips
    from tokenizer_core import metrics

    try:
        tok = tokenizer_core.from_pretrained(args.tokenizer, device="cpu")
        clips = itertools.islice(iter_eval_clips(args.shards, args.num_frames, tuple(args.resolution)), args.clips)
        if not tok.config.levels:
            raise ValueError(f"{tok.config.name}: the latent search needs a discrete (FSQ) tokenizer")
        rows = []
        stats = {"plain": TokenStats(tok.config.levels), "refined": TokenStats(tok.config.levels)}
        for clip in clips:
            original = metrics.from_uint8_frames(torch.as_tensor(clip.frames))
            video = (original / 127.5 - 1.0).unsqueeze(0)
            codings = {"": tok.encode(video), "_refined": tok.encode(video, refine_steps=args.steps)}
            if not args.no_search:
                codings["_searched"] = tok.encode_searched(video, args.steps, args.lr)
            stats["plain"].add(codings[""][0])
            stats["refined"].add(codings["_refined"][0])
            row = {"key": clip.key, "sample_key": clip.sample_key}
            for suffix, ids in codings.items():
                with torch.no_grad():
                    row["psnr" + suffix] = round(metrics.psnr(original, metrics.to_pixels(tok.decode(ids)[0])), 4)
            rows.append(row)
            print(f"{clip.sample_key}: {row['psnr']:.2f} dB, "
                  + ", ".join(f"{s[1:]} {row['psnr' + s] - row['psnr']:+.2f}" for s in codings if s), flush=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"latent_search_gap: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"latent_search_gap: no clips in {' '.join(args.shards)}", file=sys.stderr)
        return 2
    gains = {name: round(sum(r["psnr_" + name] - r["psnr"] for r in rows) / len(rows), 4)
             for name in ("refined", "searched") if "psnr_" + name in rows[0]}
    tokens = {name: stat.summary() for name, stat in stats.items()}
    print(f"{len(rows)} clips, {args.steps} steps: mean gain " + ", ".join(f"{k} {v:+.2f} dB" for k, v in gains.items()))
    for name, summary in tokens.items():
        print(f"  {name} ids: temporal repeat {summary['temporal_repeat']:.3f}, "
              f"{summary['bits_per_token_given_previous']:.2f} bits per token given the previous latent frame")
    if args.json:
        Path(args.json).write_text(json.dumps({"tokenizer": args.tokenizer, "steps": args.steps, "lr": args.lr,
                                               "mean_gain": gains, "tokens": tokens, "per_clip": rows}, indent=1))
    return 0


class TokenStats:
    """Pooled counts over ids [T', H', W'] of an FSQ model with `levels`: repeats of the id a latent
    frame earlier, and each digit's joint counts with its value a latent frame earlier."""

    def __init__(self, levels: list[int]):
        self.levels = levels
        self.same = self.pairs = 0
        self.joint: list[Counter[tuple[int, int]]] = [Counter() for _ in levels]

    def add(self, ids: torch.Tensor) -> None:
        before, after = ids[:-1].flatten(), ids[1:].flatten()
        self.same += int((before == after).sum())
        self.pairs += before.numel()
        basis = 1
        for level, joint in zip(self.levels, self.joint, strict=True):
            digit_before, digit_after = (before // basis) % level, (after // basis) % level
            joint.update(zip(digit_before.tolist(), digit_after.tolist(), strict=True))
            basis *= level

    def summary(self) -> dict[str, float]:
        bits = 0.0
        for joint in self.joint:
            total, given = sum(joint.values()), Counter[int]()
            for (b, _), n in joint.items():
                given[b] += n
            bits -= sum(n / total * math.log2(n / given[b]) for (b, _), n in joint.items())
        return {"temporal_repeat": round(self.same / max(1, self.pairs), 4),
                "bits_per_token_given_previous": round(bits, 3)}


if __name__ == "__main__":
    sys.exit(main())
