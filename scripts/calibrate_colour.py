"""Remove a tokenizer's mean colour error: measure it on footage, fold its negative into the last
bias of the decoder. The encoder is untouched, so every token it makes stays the same; only the
pixels decoded from tokens move, by one constant per colour channel.

    python scripts/calibrate_colour.py IN OUT --shards 'data/train/*.tar' [--clips N] [--dtype float16]

The shift is the mean of (reconstruction - original) per channel over every pixel of the clips
(17x256x256 by default, read through the job's data plane as `tokenmill eval` reads them),
measured before the output is clamped to pixels. It is the least-squares optimum for a constant
per channel, so on the footage it was measured on the mean error becomes zero and the squared
error falls by exactly the squared shift. Measure it on training footage, never on the set that
judges the result.

Folding: the decoder's last layer is a convolution whose output the inverse Haar patcher turns
into pixels. A constant added to one of its output channels comes out of the unpatcher as a
constant on one colour channel (the lowest band) or as a zero-mean pattern (the other bands);
the script measures that response with the model's own unpatcher and solves for the smallest
bias change that shifts each colour channel by the wanted constant.

Why: the bundled DV4x8x8-mill decodes whole 256x256 frames about two levels too low in green
(−2.0 on its training clips, −2.4 on the validation photos) and slightly high in red, a bias
its training on 64x64 crops left in place (docs/training.md, stage eighteen).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def last_decoder_conv(tok: nn.Module) -> nn.Module:
    """The decoder's last conv module (an nn.Conv2d / nn.Conv3d with a bias)."""
    conv_out = tok.decoder.conv_out
    last = conv_out[-1] if isinstance(conv_out, nn.Sequential) else conv_out
    return getattr(last, "conv3d", last)


def unpatcher_response(tok: nn.Module) -> torch.Tensor:
    """R [3, C]: the constant each colour channel receives when the decoder's last conv adds 1 to
    its output channel j (0 for channels whose response is not a constant)."""
    conv = last_decoder_conv(tok)
    channels = conv.out_channels
    video = tok.config.video
    unpatcher = tok.decoder.unpatcher3d if video else tok.decoder.unpatcher
    response = torch.zeros(3, channels, dtype=torch.float64)
    for j in range(channels):
        x = torch.zeros((1, channels, 2, 2, 2) if video else (1, channels, 2, 2), dtype=torch.float64)
        x[:, j] = 1.0
        with torch.no_grad():
            y = unpatcher(x)[0].flatten(1)  # [3, pixels]
        constant = (y - y.mean(dim=1, keepdim=True)).abs().amax(dim=1) < 1e-9
        response[:, j] = torch.where(constant, y.mean(dim=1), torch.zeros(3, dtype=torch.float64))
    return response


def fold_colour_shift(tok: nn.Module, shift: torch.Tensor) -> None:
    """Make the decoder's output move by `shift` [3] (in the model's [-1, 1] units) everywhere."""
    response = unpatcher_response(tok)
    if torch.linalg.matrix_rank(response) < 3:
        raise ValueError("the decoder's last layer cannot shift each colour channel by a constant")
    delta = torch.linalg.pinv(response) @ shift.double()
    bias = last_decoder_conv(tok).bias
    with torch.no_grad():
        bias.add_(delta.to(bias.dtype))


def mean_colour_error(tok: nn.Module, clips: list[torch.Tensor]) -> torch.Tensor:
    """Mean of (reconstruction - original) per channel, [-1, 1] units, over uint8 [T, H, W, 3] clips."""
    from tokenizer_core import metrics

    total, count = torch.zeros(3, dtype=torch.float64), 0
    for frames in clips:
        original = metrics.from_uint8_frames(frames) / 127.5 - 1.0  # [3, T, H, W]
        with torch.inference_mode():
            recon = tok.decode(tok.encode(original.unsqueeze(0).to(tok.dtype)))[0].double()
        total += (recon - original.double()).sum(dim=(1, 2, 3))
        count += original[0].numel()
    return total / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="a tokenmill checkpoint or export, or a bundled model's name")
    parser.add_argument("out", help="where the calibrated export goes (.pt)")
    parser.add_argument("--shards", required=True, nargs="+",
                        help="footage to measure on (shard patterns; never the set that judges the result)")
    parser.add_argument("--clips", type=int, default=None, help="at most this many clips (default: all)")
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--resolution", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                        help="of the stored weights (the bundled models are float16)")
    args = parser.parse_args(argv)
    if args.clips is not None and args.clips < 1:
        parser.error("--clips must be at least 1")
    import tokenizer_core
    from pipeline.tokenizer_tools.evaluate import iter_eval_clips
    from pipeline.tokenizer_tools.train_tokenizer import write_checkpoint

    try:
        tok = tokenizer_core.from_pretrained(args.input, device="cpu")
        found = iter_eval_clips(args.shards, args.num_frames, tuple(args.resolution))
        clips = [torch.as_tensor(c.frames) for c in itertools.islice(found, args.clips)]
        if not clips:
            raise ValueError(f"no clips in {args.shards}")
        source_hash = tok.weights_hash
        error = mean_colour_error(tok, clips)
        fold_colour_shift(tok, -error)
    except (FileNotFoundError, ValueError) as exc:
        print(f"calibrate_colour: {exc}", file=sys.stderr)
        return 2
    levels = [round(float(v) * 127.5, 3) for v in error]
    write_checkpoint(args.out, tok, {"colour_calibrated": {"from": args.input, "weights_hash": source_hash,
                                                           "shards": args.shards, "clips": len(clips),
                                                           "mean_error_levels_rgb": levels}},
                     dtype=getattr(torch, args.dtype))
    print(f"{args.out}: mean error {levels} (R, G, B in 0-255 levels, over {len(clips)} clips) removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
