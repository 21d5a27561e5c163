"""Average the weights of tokenizer checkpoints of one architecture into one model.

    python scripts/average_weights.py OUT.pt IN.pt IN.pt ... [--dtype float16]

Each input is a tokenmill checkpoint or export (a training checkpoint's weights are its EMA
weights); they must share one TokenizerConfig. The output is an export that `from_pretrained`,
`tokenmill eval` and a training config's `model.name` accept, with the inputs and their weights
hashes recorded under `extra["averaged_from"]`.

Averaging is only meaningful for checkpoints in one basin: the ends of warm restarts run on from
one another (stochastic weight averaging over the cycles of a cyclic learning rate), or the
checkpoints of one run. Two models trained from different random inits do not average.

Used for the bundled DV4x8x8-mill's stage fifteen (MODEL_CARD.md). The experiment and its rule,
fixed before any average was scored: candidate A is the mean of the exports of stages eleven to
fourteen, the ends of four warm-restart cycles each run on from the one before; candidate B the
mean of stages twelve to fourteen. The better one replaces the shipped model (stage eleven) only
if it gains >= 0.3 dB over it on data/val and is better on >= 5 of the 8 photos; the held-out
set is scored only after that choice. Result: A +0.10 dB over stage eleven (better on all 8
photos), B +0.10 dB (6 of 8), both below stage fourteen alone (+0.13): not shipped. The cycle
ends lie on a flat stretch, so their mean is no better than the best of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tokenizer_core.checkpoint import load_checkpoint  # noqa: E402


def average_states(paths: list[str]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(the shared config as a dict, the fp32 mean of every floating-point tensor)."""
    config, mean, _ = load_checkpoint(paths[0])
    mean = {k: v.float() if v.is_floating_point() else v for k, v in mean.items()}
    for path in paths[1:]:
        other_config, state, _ = load_checkpoint(path)
        if other_config.to_dict() != config.to_dict():
            raise ValueError(f"{path}: its config differs from {paths[0]}'s; only one architecture averages")
        if set(state) != set(mean):
            raise ValueError(f"{path}: its weights have other names than {paths[0]}'s")
        for name, value in state.items():
            if value.is_floating_point():
                mean[name] += value.float()
    return config.to_dict(), {k: v / len(paths) if v.is_floating_point() else v for k, v in mean.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="where the averaged export goes (.pt)")
    parser.add_argument("inputs", nargs="+", help="tokenmill checkpoints or exports of one architecture")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    args = parser.parse_args(argv)
    if len(args.inputs) < 2:
        parser.error("give at least two checkpoints to average")
    import tokenizer_core
    from pipeline.tokenizer_tools.train_tokenizer import write_checkpoint

    try:
        _, state = average_states(args.inputs)
    except (FileNotFoundError, ValueError) as exc:
        print(f"average_weights: {exc}", file=sys.stderr)
        return 2
    tok = tokenizer_core.from_pretrained(args.inputs[0], device="cpu")
    tok.load_state_dict(state, strict=True)
    sources = [{"path": p, "weights_hash": tokenizer_core.from_pretrained(p, device="cpu").weights_hash}
               for p in args.inputs]
    write_checkpoint(args.out, tok, {"averaged_from": sources}, dtype=getattr(torch, args.dtype))
    print(f"{args.out}: mean of {len(args.inputs)} checkpoints, weights hash "
          f"{tokenizer_core.from_pretrained(args.out, device='cpu').weights_hash}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
