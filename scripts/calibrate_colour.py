"""Calibrate a tokenizer's colours on footage: fit the per-pixel colour map (a 3x3 matrix and an
offset) that takes its reconstructions closest to the originals, and fold it into the decoder's
last layer. The encoder is untouched, so every token it makes stays the same; only the pixels
decoded from tokens change, each by the same affine map of its three colours.

    python scripts/calibrate_colour.py IN OUT --shards 'data/train/*.tar' [--clips N] [--shift-only] [--dtype float16]

The map is the least-squares fit over every pixel of the clips (17x256x256 by default, read
through the job's data plane as `tokenmill eval` reads them), in the model's [-1, 1] units before
the output is clamped to pixels; `--shift-only` fits the mean error alone. On the footage it was
fitted on the squared error can only fall; measure it on training footage, never on the set that
judges the result. A decoder whose output carries an error uncorrelated with the original gains
from the matrix too: its least-squares diagonal is below one (a Wiener-style shrink), which
costs a little where the reconstruction is already close (flat saturated colours).

Folding: the decoder's last layer is a convolution whose output channels the inverse Haar
patcher turns into pixels, band by band and alike for the three colours. Mixing the colours of
each band mixes the pixels' colours by the same matrix; a constant in the lowest band of a
colour adds a constant to that colour's pixels. The band layout is read off the model's own
unpatcher, so the script needs no knowledge of the patch method.

Why: the bundled DV4x8x8-mill decodes whole 256x256 frames about two levels too low in green and
one too high in red, on its training clips as on the validation photos (docs/training.md, stage
eighteen).
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


def band_layout(tok: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(channel_of [bands, 3], dc [bands, 3]): which output channel of the decoder's last conv holds
    band b of colour c, and the constant 1 in it adds to colour c's pixels (0 unless b is the
    lowest band). Found by passing unit inputs through the model's own unpatcher."""
    channels = last_decoder_conv(tok).out_channels
    video = tok.config.video
    unpatcher = tok.decoder.unpatcher3d if video else tok.decoder.unpatcher
    x = torch.zeros((channels, channels, 2, 2, 2) if video else (channels, channels, 2, 2), dtype=torch.float64)
    x[torch.arange(channels), torch.arange(channels)] = 1.0
    with torch.no_grad():
        y = unpatcher(x).flatten(2)  # [channel, colour, pixels]
    colour = y.abs().amax(dim=2).argmax(dim=1)
    patterns: dict[tuple[float, ...], list[int]] = {}
    for j in range(channels):
        key = tuple(round(v, 9) for v in y[j, colour[j]].tolist())
        patterns.setdefault(key, []).append(j)
    bands = list(patterns.values())
    if channels != 3 * len(bands) or any(sorted(colour[g].tolist()) != [0, 1, 2] for g in bands):
        raise ValueError("the decoder's last layer does not map bands to colours one to one")
    channel_of = torch.tensor([[g[int((colour[g] == c).nonzero())] for c in range(3)] for g in bands])
    pixels = y[channel_of, torch.arange(3)]  # [bands, 3, pixels]
    constant = (pixels - pixels.mean(dim=2, keepdim=True)).abs().amax(dim=2) < 1e-9
    return channel_of, torch.where(constant, pixels.mean(dim=2), torch.zeros_like(pixels[..., 0]))


def fold_colour_map(tok: nn.Module, matrix: torch.Tensor, offset: torch.Tensor) -> None:
    """Make every decoded pixel x (3 colours, [-1, 1] units) come out as matrix @ x + offset.

    The unpatcher treats the colours alike and linearly, so mixing the colours of each band of
    the last conv's output mixes the pixels' colours; the offset goes into the lowest band."""
    conv = last_decoder_conv(tok)
    channel_of, dc = band_layout(tok)
    if (dc != 0).sum(dim=0).min() < 1:
        raise ValueError("the decoder's last layer has no band that shifts a colour by a constant")
    mix = torch.zeros(conv.out_channels, conv.out_channels, dtype=torch.float64)
    for band in channel_of:
        mix[band.unsqueeze(1), band.unsqueeze(0)] = matrix.double()
    lowest = int((dc != 0).all(dim=1).nonzero()[0])
    shift = torch.zeros(conv.out_channels, dtype=torch.float64)
    shift[channel_of[lowest]] = offset.double() / dc[lowest]
    with torch.no_grad():
        weight = conv.weight.double().flatten(1)
        conv.weight.copy_((mix @ weight).view_as(conv.weight).to(conv.weight.dtype))
        conv.bias.copy_((mix @ conv.bias.double() + shift).to(conv.bias.dtype))


def fit_colour_map(tok: nn.Module, clips: list[torch.Tensor], shift_only: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The least-squares (matrix [3, 3], offset [3]) taking the tokenizer's reconstructions of
    uint8 [T, H, W, 3] clips to the originals, per pixel, in [-1, 1] units; `shift_only` keeps
    the matrix the identity and fits the mean error alone."""
    from tokenizer_core import metrics

    gram = torch.zeros(4, 4, dtype=torch.float64)
    cross = torch.zeros(4, 3, dtype=torch.float64)
    for frames in clips:
        original = metrics.from_uint8_frames(frames) / 127.5 - 1.0  # [3, T, H, W]
        with torch.inference_mode():
            recon = tok.decode(tok.encode(original.unsqueeze(0).to(tok.dtype)))[0].double()
        r = torch.cat([recon.flatten(1), torch.ones_like(recon[:1].flatten(1))])  # [4, pixels]
        gram += r @ r.T
        cross += r @ original.double().flatten(1).T
    if shift_only:
        mean_error = (cross[3] - gram[3, :3]) / gram[3, 3]  # mean(original - recon)
        return torch.eye(3, dtype=torch.float64), mean_error
    solution = torch.linalg.solve(gram, cross)  # [4, 3]: recon (and 1) -> original
    return solution[:3].T, solution[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="a tokenmill checkpoint or export, or a bundled model's name")
    parser.add_argument("out", help="where the calibrated export goes (.pt)")
    parser.add_argument("--shards", required=True, nargs="+",
                        help="footage to measure on (shard patterns; never the set that judges the result)")
    parser.add_argument("--clips", type=int, default=None, help="at most this many clips (default: all)")
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--resolution", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    parser.add_argument("--shift-only", action="store_true",
                        help="fit the mean error alone (the colour matrix stays the identity)")
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
        matrix, offset = fit_colour_map(tok, clips, shift_only=args.shift_only)
        fold_colour_map(tok, matrix, offset)
    except (FileNotFoundError, ValueError) as exc:
        print(f"calibrate_colour: {exc}", file=sys.stderr)
        return 2
    fitted = {"matrix": [[round(float(v), 6) for v in row] for row in matrix],
              "offset_levels_rgb": [round(float(v) * 127.5, 3) for v in offset]}
    write_checkpoint(args.out, tok, {"colour_calibrated": {"from": args.input, "weights_hash": source_hash,
                                                           "shards": args.shards, "clips": len(clips), **fitted}},
                     dtype=getattr(torch, args.dtype))
    print(f"{args.out}: colour map fitted on {len(clips)} clips and folded into the decoder: {fitted}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
