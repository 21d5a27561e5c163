"""One eval clip next to a tokenizer's reconstruction, as a small PNG (e.g. the model card's
picture of a failure).

    python scripts/eval_preview.py --tokenizer DV4x8x8-mill --shards data/eval/shards-*.tar \
        --key astronaut_zoom_h264 --out preview.png [--frames 4] [--scale 0.5] [--refine-steps N]

The clip is cut by the same data plane as `tokenmill eval` (17 frames at 256x256 by default);
`--key` matches the start of a sample key. Originals on top, reconstruction below, labelled with
per-frame PSNR (pipeline.tokenizer_tools.preview.compare_image).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pipeline.tokenizer_tools.evaluate import iter_eval_clips, load_tokenizer, score_round_trip
from pipeline.tokenizer_tools.preview import compare_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--shards", nargs="+", required=True)
    parser.add_argument("--key", required=True, help="start of the sample key")
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--scale", type=float, default=0.5, help="resize factor of the PNG")
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--resolution", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--refine-steps", type=int, default=0, help="encode as tokenizer.refine_steps does")
    args = parser.parse_args()
    tok = load_tokenizer(args.tokenizer)
    clip = next(c for c in iter_eval_clips(args.shards, args.num_frames, tuple(args.resolution))
                if c.sample_key.startswith(args.key))
    scores, recon = score_round_trip(tok, clip.frames, args.refine_steps)
    recon_frames = recon.permute(1, 2, 3, 0).to(torch.uint8).numpy()
    refined = f", {args.refine_steps} refine steps" if args.refine_steps else ""
    title = (f"{tok.config.name}{refined} on {clip.sample_key}: {scores['psnr']:.2f} dB "
             f"(same-grid baseline {scores['baseline_psnr']:.2f} dB)")
    image = compare_image(np.asarray(clip.frames), recon_frames, args.frames, title)
    if args.scale != 1:
        image = image.resize((int(image.width * args.scale), int(image.height * args.scale)))
    image.save(args.out, optimize=True)
    print(f"{args.out}: {title}")


if __name__ == "__main__":
    main()
