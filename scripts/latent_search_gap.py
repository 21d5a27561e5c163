"""How far a tokenizer's encoder lies from the best latent for its own decoder: each clip is coded
twice, by the encoder and by the encoder's latent improved with a search (Adam on the latent alone,
through the decoder and the rounding, on the clip's squared error), and both are scored.

    python scripts/latent_search_gap.py TOKENIZER --shards PATTERNS... [--steps 50] [--clips N] [--json OUT]

A large gap says the decoder can already make better pictures from the same token budget than
the encoder asks of it, so training the encoder is the lever; `loss.latent` in the training config
trains it towards such a search. The search is a measuring tool, not an encoder: each step costs a
decode and its backward.

Measured on the bundled DV4x8x8-mill (stage eleven) with 50 steps: +0.98 dB on average over the 16
clips of data/val at 17x256x256 (+0.41 to +1.56 dB per clip), about as much on training clips
(docs/training.md, stage nineteen).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
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
        rows = []
        for clip in clips:
            original = metrics.from_uint8_frames(torch.as_tensor(clip.frames))
            video = (original / 127.5 - 1.0).unsqueeze(0)
            with torch.no_grad():
                plain = metrics.to_pixels(tok.decode(tok.encode(video))[0])
                searched = metrics.to_pixels(tok.decode(tok.encode_searched(video, args.steps, args.lr))[0])
            row = {"key": clip.key, "sample_key": clip.sample_key,
                   "psnr": round(metrics.psnr(original, plain), 4),
                   "psnr_searched": round(metrics.psnr(original, searched), 4)}
            rows.append(row)
            print(f"{clip.sample_key}: {row['psnr']:.2f} dB, searched {row['psnr_searched']:.2f} dB "
                  f"({row['psnr_searched'] - row['psnr']:+.2f})", flush=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"latent_search_gap: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"latent_search_gap: no clips in {' '.join(args.shards)}", file=sys.stderr)
        return 2
    gain = sum(r["psnr_searched"] - r["psnr"] for r in rows) / len(rows)
    print(f"{len(rows)} clips: the search gains {gain:+.2f} dB on average ({args.steps} steps)")
    if args.json:
        Path(args.json).write_text(json.dumps({"tokenizer": args.tokenizer, "steps": args.steps, "lr": args.lr,
                                               "mean_gain": round(gain, 4), "per_clip": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
