"""Widen a trained tokenizer without changing what it computes, so that training can go on at more
capacity from where the narrow model stopped instead of from scratch (Net2Net's wider step).

    python scripts/widen_weights.py IN.pt OUT.pt [--factor 2] [--part all|decoder] [--noise 0.01]

Every feature channel of the widened part is repeated `factor` times, side by side (channel c
becomes channels c*r .. c*r + r-1). A layer that writes such channels has its output weights and
bias repeated; a layer that reads them has its input weights repeated and divided by r, so each
of its outputs is unchanged. The rest is exact by construction: SiLU and the samplers act per
channel; the video models' norms (one group: a per-frame LayerNorm over C, H, W) and the image
models' 32-group norms see each value r times, which leaves mean and variance as they were; the
attention's scale C^-1/2 shrinks by r^-1/2 while q.k sums r copies, so q's weights and bias are
scaled by r^-1/2. The latent (z_channels, the FSQ dimensions) and the pixels keep their width.

The copies would stay identical under training if nothing told them apart, so `--noise` adds to
each input weight that reads a repeated channel a perturbation (relative to the layer's weight
scale) whose r copies sum to zero: the layer still computes the same function on repeated inputs,
but the copies now receive different gradients. The test: the widened model's latents and ids
equal the original's (tests/test_tokenizer_checkpoint.py).

`--part decoder` widens the decoder only (`decoder_channels_mult` = r x the encoder's), where
the reconstruction is made; `all` widens both (`channels` x r).

Used for the bundled DV4x8x8-mill's stage seventeen (examples/train_narrow_stage17_*.yaml,
docs/training.md): stage thirteen widened 2x (all, or the decoder alone) and trained on the same
batches as an unwidened control reached the control's training loss and validation score (+0.12
and +0.14 dB over stage eleven against +0.12) at 1.7-2.3x the CPU per step. Right after widening,
Adam moves the split input weights (half their old size) twice as far relative to themselves at
the same lr: the widened runs started 7-10% above the control's loss and caught up by step 2,500.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tokenizer_core.config import TokenizerConfig  # noqa: E402


def widened_config(config: TokenizerConfig, factor: int, part: str) -> TokenizerConfig:
    if part == "all":  # the decoder's multipliers scale `channels`, so it widens too
        return config.replace(channels=config.channels * factor)
    return config.replace(decoder_channels_mult=[m * factor for m in config.dec_channels_mult])


def _is_attention_query(name: str) -> bool:
    return ".q." in name or name.startswith("q.")


def widen_state(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], factor: int,
                noise: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """`state` (the narrow model's) mapped onto the shapes of `target` (the wide model's state dict).

    A dimension that grew r-fold is a repeated channel dimension: dim 0 (outputs, or a norm's or
    bias's channels) is repeated; dim 1 of a weight (its inputs) is repeated and divided by r, plus
    the zero-sum noise. Any other shape change is an error: widening never reshapes otherwise.
    """
    if set(state) != set(target):
        raise ValueError(f"the widened model's weights have other names: {sorted(set(state) ^ set(target))[:4]}")
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, wide in target.items():
        value = state[name].float() if state[name].is_floating_point() else state[name]
        if value.shape == wide.shape:
            out[name] = value.clone()
            continue
        if value.ndim != wide.ndim:
            raise ValueError(f"{name}: {value.ndim} dimensions, the widened model has {wide.ndim}")
        for dim, (old, new) in enumerate(zip(value.shape, wide.shape, strict=True)):
            if old == new:
                continue
            if new != old * factor or dim > 1:
                raise ValueError(f"{name}: shape {tuple(value.shape)} -> {tuple(wide.shape)} is not a "
                                 f"{factor}x channel widening")
            value = value.repeat_interleave(factor, dim=dim)
            if dim == 1:
                value = value / factor
                if noise > 0:
                    value = value + _zero_sum_noise(value, factor, noise, generator)
        if _is_attention_query(name):
            value = value * factor ** -0.5
        out[name] = value.contiguous()
    return out


def _zero_sum_noise(weight: torch.Tensor, factor: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Noise on a weight's input dim whose `factor` adjacent copies sum to zero, sized to its std."""
    shape = list(weight.shape)
    grouped = [shape[0], shape[1] // factor, factor, *shape[2:]]
    draw = torch.randn(grouped, generator=generator)
    draw = draw - draw.mean(dim=2, keepdim=True)
    return (draw * scale * weight.std()).reshape(shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="a tokenmill checkpoint or export, or a bundled model's name")
    parser.add_argument("out", help="where the widened export goes (.pt, float32)")
    parser.add_argument("--factor", type=int, default=2, help="channel multiplier (an integer >= 2)")
    parser.add_argument("--part", choices=["all", "decoder"], default="all")
    parser.add_argument("--noise", type=float, default=0.01,
                        help="symmetry-breaking noise, relative to each weight's std (0: exact copies)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.factor < 2:
        parser.error("--factor must be an integer >= 2")
    import tokenizer_core
    from pipeline.tokenizer_tools.train_tokenizer import write_checkpoint
    from tokenizer_core.loading import build

    try:
        narrow = tokenizer_core.from_pretrained(args.input, device="cpu")
        wide = build(widened_config(narrow.config, args.factor, args.part))
        wide.load_state_dict(widen_state(narrow.state_dict(), wide.state_dict(), args.factor, args.noise, args.seed),
                             strict=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"widen_weights: {exc}", file=sys.stderr)
        return 2
    write_checkpoint(args.out, wide, {"widened_from": {"path": args.input, "weights_hash": narrow.weights_hash,
                                                       "factor": args.factor, "part": args.part,
                                                       "noise": args.noise, "seed": args.seed}},
                     dtype=torch.float32)
    params = sum(p.numel() for p in wide.parameters())
    print(f"{args.out}: {args.part} widened {args.factor}x, {params / 1e6:.2f}M parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
