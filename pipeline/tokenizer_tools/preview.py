"""`tokenmill preview OUTPUT --key KEY --out DIR`: look at what a clip's tokens keep.

Reads the clip's row from the job output (only shards with a manifest record are trusted),
decodes its tokens back to pixels with the job's tokenizer (named in job.json), re-decodes the
original frames from the source shard with the job's clip settings, and writes

    DIR/<KEY>-compare.png   a handful of frames across the clip: originals in the top row, the
                            reconstruction below, each reconstructed frame labelled with its PSNR
    DIR/<KEY>.mp4           the reconstruction as H.264 at the clip's frame rate

<KEY> is `pipeline.records.safe_key` of the key with '/' as '_' (a flat, safe file name). The source shard is
read with the storage options given by --storage-option (job.json never stores their values).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import numpy as np

from schemas.config import SpecError

log = logging.getLogger(__name__)

LABEL_HEIGHT = 16  # pixels of caption strip under each frame


def safe_name(key: str) -> str:
    """A flat file name for a clip key: the key grammar's form of it, folders joined by '_'."""
    from pipeline.records import safe_key

    return safe_key(key).replace("/", "_")


def read_token_row(output: str, key: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training item (pipeline.loader.rows.to_item) of clip `key` in a job output."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.loader.rows import rows_from_table, to_item
    from pipeline.writers import storage
    from pipeline.writers.manifest import read_manifest

    records = read_manifest(output, storage_options)
    shard = key.split(".", 1)[0]
    if shard not in records:
        raise SpecError("--key", f"no finished shard {shard!r} in {output} (key {key!r}); "
                                 f"finished shards: {', '.join(sorted(records)[:5]) or 'none'}")
    record = records[shard]
    tokens = record.outputs.get("tokens")
    if tokens is None or record.format != "parquet":
        raise SpecError("--key", f"shard {shard} has no Parquet token file (format {record.format}); "
                                 "preview reads Parquet outputs")
    fs, root = storage.get_fs(output, storage_options)
    with fs.open(storage.join(root, tokens.path), "rb") as fh:
        table = pq.read_table(fh, filters=pc.field("key") == key)
    if table.num_rows == 0:
        raise SpecError("--key", f"clip {key!r} is not in {tokens.path}")
    return to_item(rows_from_table(table, 0, 1)[0])


def original_frames(row: dict[str, Any], clip_spec: Any, storage_options: dict[str, Any] | None,
                    grid: Any = None) -> np.ndarray:
    """Re-decode the clip's frames (uint8 [T, H, W, 3]) from its source shard; a whole-video row's
    chunks are joined. `grid`: the tokenizer's pipeline.readers.clips.Grid."""
    from pipeline.readers.stages import iter_shard
    from pipeline.records import Clip, ShardStats

    chunks = []
    shard = row["key"].split(".", 1)[0]  # the job's id of the shard: clip keys start with it
    for item in iter_shard(row["source_url"], clip_spec, storage_options, ShardStats(), isolate=False, grid=grid,
                           shard=shard):
        if isinstance(item, Clip) and item.key == row["key"]:
            chunks.append(item.frames)
            if item.final:
                return np.concatenate(chunks)
    raise SpecError("--key", f"clip {row['key']} could not be re-decoded from {row['source_url']}")


def _at_revision(value: str | None, revision: str | None) -> str | None:
    """A Hub repo id pinned to the commit the job loaded (job.json's tokenizer.revision)."""
    from schemas.hubref import HUB_SCHEME, hub_ref_for

    ref = hub_ref_for(value) if value and revision else None
    if ref is None or not str(revision).startswith(f"{ref.repo_id}@"):
        return value
    return f"{HUB_SCHEME}{revision}"


def job_tokenizer(output: str, storage_options: dict[str, Any] | None) -> tuple[Any, Any]:
    """(tokenizer, ClipSpec) of the job that wrote `output`, from its job.json."""
    import tokenizer_core
    from pipeline.writers.manifest import read_job_file
    from schemas.config import from_dict
    from schemas.jobspec import ClipSpec, TokenizerSpec

    job = read_job_file(output, storage_options)
    if job is None:
        raise SpecError("OUTPUT", f"{output} has no job.json: not a tokenmill job output")
    tok_spec = from_dict(TokenizerSpec, job.spec["tokenizer"], "tokenizer")
    clip_spec = from_dict(ClipSpec, job.spec["clips"], "clips")
    revision = job.fingerprint.get("tokenizer.revision")
    name, checkpoint = (_at_revision(v, revision) for v in (tok_spec.name, tok_spec.checkpoint))
    tok = tokenizer_core.from_pretrained(str(name), init=tok_spec.init, checkpoint=checkpoint)
    expected = job.fingerprint.get("tokenizer.weights_hash")
    if expected and expected != tok.weights_hash:
        log.warning("tokenizer %s now has weights %s..., the job used %s...: the preview may not match",
                    tok_spec.name, tok.weights_hash[:12], expected[:12])
    return tok, clip_spec


def reconstruct(tok: Any, row: dict[str, Any]) -> np.ndarray:
    """Decode the row's tokens or latents -> uint8 frames [T, H, W, 3]."""
    import torch

    from tokenizer_core.metrics import to_pixels

    codes = row["tokens"] if "tokens" in row else row["latents"].float()
    with torch.inference_mode():
        video = tok.decode(codes.unsqueeze(0).to(tok.device))  # [1, 3, T, H, W]
    pixels = to_pixels(video[0].cpu())  # [3, T, H, W] on [0, 255]
    return pixels.permute(1, 2, 3, 0).to(torch.uint8).numpy()


def frame_psnr(a: np.ndarray, b: np.ndarray) -> float:
    import torch

    from tokenizer_core.metrics import psnr

    return psnr(torch.from_numpy(a).float(), torch.from_numpy(b).float())


def compare_image(original: np.ndarray, recon: np.ndarray, count: int, title: str) -> Any:
    """PIL image: `count` frames spread over the clip, originals above, reconstruction below."""
    from PIL import Image, ImageDraw

    frames, height, width, _ = original.shape
    picks = sorted(set(np.linspace(0, frames - 1, num=min(count, frames)).round().astype(int).tolist()))
    strip = height + LABEL_HEIGHT
    canvas = Image.new("RGB", (width * len(picks), LABEL_HEIGHT + 2 * strip), "black")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="white")
    for col, f in enumerate(picks):
        x = col * width
        canvas.paste(Image.fromarray(original[f]), (x, LABEL_HEIGHT))
        draw.text((x + 4, LABEL_HEIGHT + height + 2), f"f{f}", fill="white")
        canvas.paste(Image.fromarray(recon[f]), (x, LABEL_HEIGHT + strip))
        draw.text((x + 4, LABEL_HEIGHT + strip + height + 2),
                  f"f{f} {frame_psnr(original[f], recon[f]):.1f}dB", fill="white")
    return canvas


def write_mp4(frames: np.ndarray, fps: float, path: str) -> None:
    """uint8 [T, H, W, 3] -> H.264 MP4 (yuv420p; odd sizes are cropped by one pixel)."""
    from fractions import Fraction

    import av

    _, height, width, _ = frames.shape
    height, width = height - height % 2, width - width % 2
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:height, :width]), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())


def preview(output: str, key: str, out_dir: str, count: int = 6,
            storage_options: dict[str, Any] | None = None) -> tuple[str, str, float]:
    """Write the PNG and MP4 for clip `key` (a clip key, a prefix of one, or a sample key: see
    pipeline.loader.listing.resolve_key); returns (png path, mp4 path, clip PSNR)."""
    from pipeline.loader.listing import resolve_key
    from pipeline.readers.clips import Grid

    tok, clip_spec = job_tokenizer(output, storage_options)
    key = resolve_key(output, key, storage_options)
    row = read_token_row(output, key, storage_options)
    recon = reconstruct(tok, row)
    grid = Grid(tok.config.temporal_compression, tok.config.spatial_compression)
    original = original_frames(row, clip_spec, storage_options, grid)
    if original.shape != recon.shape:
        raise ValueError(f"clip {key}: original frames {original.shape} and reconstruction {recon.shape} differ")
    clip_psnr = frame_psnr(original, recon)
    os.makedirs(out_dir, exist_ok=True)
    name = safe_name(key)
    png, mp4 = os.path.join(out_dir, f"{name}-compare.png"), os.path.join(out_dir, f"{name}.mp4")
    title = f"{key}  {tok.config.name}  clip PSNR {clip_psnr:.2f} dB  (top: original, bottom: from tokens)"
    compare_image(original, recon, count, title).save(png)
    write_mp4(recon, float(row.get("fps") or 24.0), mp4)
    return png, mp4, clip_psnr


def cli_preview(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise SpecError("--frames", "must be >= 1")
    from pipeline.writers.storage import parse_storage_options

    options = parse_storage_options(getattr(args, "storage_options", []) or [])
    png, mp4, clip_psnr = preview(args.output, args.key, args.out, args.frames, options or None)
    print(f"{png}\n{mp4}\nclip PSNR {clip_psnr:.2f} dB")
    return 0
