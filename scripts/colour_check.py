"""How well a tokenizer keeps colour: flat clips of a grid of colours, encoded and decoded.

    python scripts/colour_check.py --tokenizer DV4x8x8-mill [--levels 5] [--json out.json]

Each clip is one colour over 9x32x32 pixels (levels^3 colours, every channel at `levels` evenly
spaced values from 0 to 255). Reported: the mean absolute error per channel in 0-255 units over
all of them, and the worst colours with what came back. A flat field has no texture to spend
bits on, so a tokenizer that keeps colour returns it within a few units; one that has not
learnt saturated colours returns them greyed or shifted. Synthetic and independent of any
footage, so it can choose between checkpoints without touching a held-out evaluation set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tokenizer_core  # noqa: E402


def colour_errors(tok: torch.nn.Module, levels: int, batch: int = 25) -> tuple[list[tuple[int, ...]], torch.Tensor,
                                                                                torch.Tensor]:
    """(colours, mean abs error per colour and channel [N, 3], mean colour returned [N, 3])."""
    values = [round(i * 255 / (levels - 1)) for i in range(levels)]
    colours = list(itertools.product(values, values, values))
    x = torch.tensor(colours, dtype=torch.float32)[:, :, None, None, None].expand(-1, 3, 9, 32, 32) / 127.5 - 1
    out = []
    with torch.no_grad():
        for i in range(0, len(colours), batch):
            part = x[i:i + batch].contiguous()
            out.append(tok.decode(tok.encode(part)).clamp(-1, 1))  # type: ignore[operator]
    y = torch.cat(out)
    err = ((y - x) * 127.5).abs().mean(dim=(2, 3, 4))
    back = (y.mean(dim=(2, 3, 4)) + 1) * 127.5
    return colours, err, back


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True, help="preset or bundled name, or a checkpoint")
    parser.add_argument("--levels", type=int, default=5, help="values per channel (levels^3 colours)")
    parser.add_argument("--worst", type=int, default=8, help="worst colours to list")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tok = tokenizer_core.from_pretrained(args.tokenizer).eval()
    colours, err, back = colour_errors(tok, args.levels)
    order = err.sum(1).argsort(descending=True)[: args.worst].tolist()
    report = {
        "tokenizer": args.tokenizer,
        "colours": len(colours),
        "mean_abs_error": round(float(err.mean()), 2),
        "mean_abs_error_rgb": [round(float(e), 2) for e in err.mean(0)],
        "worst": [{"colour": colours[j], "returned": [round(float(v)) for v in back[j]]} for j in order],
    }
    print(f"{args.tokenizer}: mean absolute error {report['mean_abs_error']} (0-255) over {len(colours)} flat colours")
    for item in report["worst"]:
        print(f"  {item['colour']} -> {tuple(item['returned'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
