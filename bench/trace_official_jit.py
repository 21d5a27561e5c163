"""Official-format encoder.jit / decoder.jit traced from NVIDIA's own eager classes, for bench_tokenizer.

    .venv/bin/python bench/trace_official_jit.py --official-path DIR --out DIR
        [--presets CV8x8x8 DV8x16x16] [--shape 17x512x512]

NVIDIA's released files are what users run, but they cannot be downloaded on a machine without
network. This makes the closest stand-in: NVIDIA's Python classes (`cosmos_tokenizer` from
NVIDIA/Cosmos-Tokenizer, under --official-path; kept outside the repository, never committed)
holding tokenmill's seeded random weights of the preset (strict load), traced the way the release
is made: `torch.jit.trace` of `encoder_jit()` / `decoder_jit()` on a [1, 3, T, H, W] input, fp32
on CPU. For discrete presets quant_conv is scaled ×200 so that the ids vary. Writes
`OUT/<preset>/encoder.jit` and `decoder.jit`; `bench_tokenizer.py --jit-dir OUT` then loads the
native model from the same files, so both sides hold identical weights. A check after tracing
compares native and traced outputs at a smaller shape and prints the differences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenizer import official_eager  # noqa: E402

import tokenizer_core as tc  # noqa: E402


def trace(preset: str, official_path: str, out: Path, shape: tuple[int, int, int]) -> None:
    native = tc.from_pretrained(preset, init="random")
    if native.config.discrete:
        with torch.no_grad():
            for p in native.quant_conv.parameters():
                p.mul_(200.0)
    ref = official_eager(preset, official_path)
    ref.load_state_dict({k: v.contiguous() for k, v in native.state_dict().items()}, strict=True)
    if native.config.discrete:
        ref.quantizer.dtype = torch.float32
    folder = out / preset
    folder.mkdir(parents=True, exist_ok=True)
    x = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        encoder = torch.jit.trace(ref.encoder_jit(), x, check_trace=False)
        z = encoder(x)[0]
        decoder = torch.jit.trace(ref.decoder_jit(), z, check_trace=False)
    encoder.save(str(folder / "encoder.jit"))
    decoder.save(str(folder / "decoder.jit"))
    loaded = tc.from_pretrained(preset, checkpoint=folder)
    jit = tc.from_pretrained(preset, checkpoint=folder, backend="jit")
    small = torch.rand(1, 3, 17, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a, b = loaded.encode(small), jit.encode(small)
    same = (a == b).float().mean().item() if native.config.discrete else None
    latent = None if native.config.discrete else (a - b).abs().max().item()
    pixels = (loaded.decode(a) - jit.decode(a)).abs().max().item()
    print(f"{preset}: traced at {shape}; at 17x256x256 native vs traced: ids equal {same}, "
          f"latent max |d| {latent}, pixels max |d| {pixels:.2e} -> {folder}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-path", required=True, help="folder holding NVIDIA's cosmos_tokenizer package")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--presets", nargs="+", default=["CV8x8x8", "DV8x16x16"])
    parser.add_argument("--shape", default="17x512x512", help="T x H x W of the tracing input")
    args = parser.parse_args()
    t, h, w = (int(v) for v in args.shape.split("x"))
    for preset in args.presets:
        trace(preset, args.official_path, args.out, (t, h, w))


if __name__ == "__main__":
    main()
