"""Token file writers: one local file per shard, Parquet or WebDataset tar, same information.

Both take rows one clip at a time (`ClipInfo` + encoded array) and write them incrementally, so
memory holds at most one Parquet row group. Neither knows about publication: `pipeline.writers.commit`
moves the finished file into place.

    ids     uint16  [t, h, w]       discrete tokenizers
    latent  float   [c, t, h, w]    continuous tokenizers (float32 | float16 | bfloat16 bits)
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.records import safe_key
from schemas.errors import error_schema
from schemas.tokens import (
    MAX_VOCAB_SIZE,
    OPTIONAL_COLUMNS,
    ROW_GROUP_BYTES,
    ROW_GROUP_ROWS,
    Kind,
    token_schema,
)

# measured in bench/bench_output_encoding.py: see docs/output.md
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": ["key", "source_url", "sample_key", "tokenizer", "meta", "latent_dtype", "source_member"],
    "use_byte_stream_split": ["tokens.list.element"],
    "write_statistics": ["key", "clip_index", "start_frame", "sample_key"],
}


@dataclass
class ClipInfo:
    """A clip's row fields without its frames, so a caller can free frames before tokens return."""

    key: str
    source_url: str
    sample_key: str
    clip_index: int
    start_frame: int
    num_frames: int
    fps: float
    height: int
    width: int
    meta: str | None = None
    source_member: str | None = None  # the video's member name as the input shard spells it
    scene_index: int | None = None
    scene_start: int | None = None
    motion: float | None = None
    psnr: float | None = None
    ssim: float | None = None

    @classmethod
    def from_clip(cls, clip: Any) -> ClipInfo:
        """From a `pipeline.records.Clip` (frames uint8 [T, H, W, 3]) or anything with these fields."""
        if isinstance(clip, ClipInfo):
            return clip
        frames = getattr(clip, "frames", None)
        if frames is not None:
            num_frames, height, width = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
        else:
            num_frames, height, width = int(clip.num_frames), int(clip.height), int(clip.width)
        return cls(
            key=clip.key, source_url=clip.source_url, sample_key=clip.sample_key,
            clip_index=int(clip.clip_index), start_frame=int(clip.start_frame), num_frames=num_frames,
            fps=float(clip.fps), height=height, width=width, meta=clip.meta,
            source_member=getattr(clip, "source_member", None),
            scene_index=getattr(clip, "scene", None), scene_start=getattr(clip, "scene_start", None),
            motion=getattr(clip, "motion", None),
        )


@dataclass
class Encoded:
    """One clip's tokenizer output, normalised: ids as uint16 or latents as raw bytes."""

    kind: Kind
    shape: tuple[int, ...]  # [t, h, w] or [c, t, h, w]
    array: np.ndarray  # uint16 ids, or the latent (bfloat16 carried as its uint16 bit pattern)
    dtype: str  # "uint16" | "float32" | "float16" | "bfloat16"

    @property
    def positions(self) -> int:
        """Tokens (discrete) or latent positions t*h*w (continuous)."""
        return int(np.prod(self.shape[-3:]))


def normalise(encoded: Any, key: str) -> Encoded:
    """Accept a numpy array or a torch tensor: integer ids [t,h,w] or float latents [c,t,h,w]."""
    if type(encoded).__module__.startswith("torch"):
        encoded = _from_torch(encoded)
        if isinstance(encoded, Encoded):
            return encoded
    arr = np.asarray(encoded)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.ndim != 3:
            raise ValueError(f"clip {key}: token ids must be [t, h, w], got shape {list(arr.shape)}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= MAX_VOCAB_SIZE):
            raise ValueError(f"clip {key}: token ids must lie in [0, {MAX_VOCAB_SIZE}) to be stored as "
                             f"uint16, got [{int(arr.min())}, {int(arr.max())}]")
        return Encoded("discrete", tuple(arr.shape), np.ascontiguousarray(arr, dtype=np.uint16), "uint16")
    if arr.dtype in (np.float32, np.float16):
        if arr.ndim != 4:
            raise ValueError(f"clip {key}: latents must be [c, t, h, w], got shape {list(arr.shape)}")
        return Encoded("continuous", tuple(arr.shape), np.ascontiguousarray(arr), str(arr.dtype))
    raise ValueError(f"clip {key}: unsupported encoded dtype {arr.dtype} (want integer ids or float16/32)")


def _from_torch(tensor: Any) -> Any:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        if tensor.ndim != 4:
            raise ValueError(f"latents must be [c, t, h, w], got shape {list(tensor.shape)}")
        bits = tensor.view(torch.int16).numpy().view(np.uint16)
        return Encoded("continuous", tuple(tensor.shape), bits, "bfloat16")
    return tensor.numpy()


def optional_columns(clips: Any, quality: Any) -> tuple[str, ...]:
    """The optional token columns (schemas.tokens.OPTIONAL_COLUMNS) a job with these specs writes."""
    names: list[str] = []
    if clips.split_scenes:
        names += ["scene_index", "scene_start"]
    if clips.min_motion is not None:
        names.append("motion")
    if quality.sample_rate > 0:
        names += ["psnr", "ssim"]
    return tuple(names)


_OPTIONAL = set(OPTIONAL_COLUMNS)


def _common_row(info: ClipInfo, tokenizer: str, optional: tuple[str, ...]) -> dict[str, Any]:
    row = {k: v for k, v in asdict(info).items() if k not in _OPTIONAL or k in optional}
    row["tokenizer"] = tokenizer
    return row


class ParquetTokenFile:
    """Token rows into one Parquet file, a row group every ROW_GROUP_ROWS clips (or bytes)."""

    def __init__(self, path: str, kind: Kind, metadata: dict[str, str], optional: tuple[str, ...] = ()):
        self.path = path
        self.kind = kind
        self.optional = optional
        self.schema = token_schema(kind, metadata, optional)
        self.rows = 0
        self._writer = pq.ParquetWriter(path, self.schema, **PARQUET_OPTIONS)
        self._buffer: list[tuple[dict[str, Any], Encoded]] = []
        self._buffer_bytes = 0

    def add(self, info: ClipInfo, enc: Encoded, tokenizer: str) -> None:
        if enc.kind != self.kind:
            raise ValueError(f"clip {info.key}: {enc.kind} output in a {self.kind} token file")
        self._buffer.append((_common_row(info, tokenizer, self.optional), enc))
        self._buffer_bytes += enc.array.nbytes
        if len(self._buffer) >= ROW_GROUP_ROWS or self._buffer_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        columns: dict[str, Any] = {
            f.name: [row[f.name] for row, _ in self._buffer] for f in self.schema if f.name in self._buffer[0][0]
        }
        encs = [e for _, e in self._buffer]
        shapes = [list(e.shape) for e in encs]
        if self.kind == "discrete":
            offsets = np.cumsum([0] + [e.array.size for e in encs], dtype=np.int32)
            flat = pa.array(np.concatenate([e.array.reshape(-1) for e in encs]), type=pa.uint16())
            columns["tokens"] = pa.ListArray.from_arrays(pa.array(offsets), flat)
            columns["token_shape"] = shapes
        else:
            columns["latents"] = [e.array.tobytes() for e in encs]
            columns["latent_shape"] = shapes
            columns["latent_dtype"] = [e.dtype for e in encs]
        table = pa.Table.from_pydict(columns, schema=self.schema)
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self.rows += len(self._buffer)
        self._buffer, self._buffer_bytes = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


class TarTokenFile:
    """WebDataset tar: per clip `<wkey>.npy` (ids or latent) + `<wkey>.json` (the row's other fields).

    WebDataset splits a sample key at the first '.', and clip keys contain dots, so the member
    key is `<sample_key>_<clip_index:04d>`; the full clip key is in the `.json`. The sample key
    goes through `safe_key` (unchanged for keys the reader made), so no member name can escape
    the folder the tar is extracted into.
    """

    def __init__(self, path: str, kind: Kind, metadata: dict[str, str], optional: tuple[str, ...] = ()):
        self.path = path
        self.kind = kind
        self.metadata = metadata
        self.optional = optional
        self.rows = 0
        self._tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)

    def add(self, info: ClipInfo, enc: Encoded, tokenizer: str) -> None:
        if enc.kind != self.kind:
            raise ValueError(f"clip {info.key}: {enc.kind} output in a {self.kind} token file")
        row = _common_row(info, tokenizer, self.optional)
        if enc.kind == "discrete":
            row["token_shape"] = list(enc.shape)
        else:
            row["latent_shape"] = list(enc.shape)
            row["latent_dtype"] = enc.dtype
        npy = io.BytesIO()
        np.save(npy, enc.array, allow_pickle=False)
        member = f"{safe_key(info.sample_key)}_{info.clip_index:04d}"
        self._add_member(f"{member}.npy", npy.getvalue())
        self._add_member(f"{member}.json", json.dumps(row, sort_keys=True).encode())
        self.rows += 1

    def _add_member(self, name: str, data: bytes) -> None:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mtime = 0  # byte-identical reruns
        ti.mode = 0o644
        self._tar.addfile(ti, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()


def write_error_file(path: str, rows: list[dict[str, str]], metadata: dict[str, str]) -> int:
    """Dead-letter rows into one Parquet file (written even when empty); returns the row count."""
    schema = error_schema(metadata)
    columns = {f.name: [r[f.name] for r in rows] for f in schema}
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path, compression="zstd")
    return len(rows)
