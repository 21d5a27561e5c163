"""Token rows from Arrow to training items, with ids kept integral all the way.

A Parquet row group is read as an Arrow table and cut into light per-row records (ids as a flat uint16
numpy copy, so a row held in a shuffle buffer does not pin its whole row group in memory).
A WebDataset token tar (`<name>.npy` + `<name>.json` per clip, see `pipeline.writers.token_files`) is
streamed into the same records. `to_item` turns a record into the dict a training loop sees:

    key, source_url, sample_key, clip_index, start_frame, num_frames, fps, height, width,
    tokenizer, meta (parsed JSON or None), caption (str or None), and either
    tokens:  int64 [t, h, w]      (discrete tokenizers)
    latents: float [c, t, h, w]   (continuous tokenizers, in the stored dtype)

Ids never pass through a float dtype: uint16 on disk -> uint16 numpy -> int64 tensor.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from schemas.tokens import OPTIONAL_COLUMNS

log = logging.getLogger(__name__)

# scalar columns copied into every item when the file has them
SCALAR_COLUMNS = (
    "key",
    "source_url",
    "sample_key",
    "clip_index",
    "start_frame",
    "num_frames",
    "fps",
    "height",
    "width",
    "tokenizer",
    "meta",
    *OPTIONAL_COLUMNS,  # copied when the job wrote them
)
LATENT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _flat_ids(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, row offsets) of a list-of-integers column, values in their stored int type."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array.type, pa.ExtensionType):  # e.g. Arrow's fixed-shape tensor
        array = array.storage
    values = array.flatten()
    if not pa.types.is_integer(values.type):
        raise TypeError(f"token ids are stored as {values.type}; they must be an integer type")
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return values.to_numpy(zero_copy_only=False), offsets


def rows_from_table(table: pa.Table, start: int, stop: int) -> list[dict[str, Any]]:
    """Records for rows [start, stop) of one row group's table."""
    part = table.slice(start, stop - start)
    rows: list[dict[str, Any]] = [{} for _ in range(part.num_rows)]
    for name in SCALAR_COLUMNS:
        if name in part.column_names:
            for row, value in zip(rows, part.column(name).to_pylist(), strict=True):
                row[name] = value
    if "tokens" in part.column_names:
        values, offsets = _flat_ids(part.column("tokens"))
        shapes = part.column("token_shape").to_pylist()
        for i, row in enumerate(rows):
            row["ids"] = values[offsets[i] : offsets[i + 1]].copy()
            row["shape"] = tuple(shapes[i])
    elif "latents" in part.column_names:
        shapes = part.column("latent_shape").to_pylist()
        dtypes = part.column("latent_dtype").to_pylist()
        for row, blob, shape, dtype in zip(rows, part.column("latents").to_pylist(), shapes, dtypes, strict=True):
            row["latent_bytes"], row["shape"], row["latent_dtype"] = blob, tuple(shape), dtype
    else:
        raise ValueError(f"token file has neither 'tokens' nor 'latents' (columns: {part.column_names})")
    return rows


def _tar_record(npy: bytes, text: bytes) -> dict[str, Any]:
    fields = json.loads(text)
    array = np.load(io.BytesIO(npy), allow_pickle=False)
    row = {name: fields.get(name) for name in SCALAR_COLUMNS if name in fields}
    if "token_shape" in fields:
        if array.dtype.kind not in "iu":
            raise TypeError(f"clip {row.get('key')}: ids stored as {array.dtype}; they must be integers")
        row["ids"], row["shape"] = array.reshape(-1), tuple(fields["token_shape"])
    else:  # bfloat16 latents are carried as their uint16 bit pattern: the bytes are what matter
        row["latent_bytes"], row["shape"] = array.tobytes(), tuple(fields["latent_shape"])
        row["latent_dtype"] = fields["latent_dtype"]
    return row


def rows_from_tar(handle: Any, start: int, stop: int) -> Iterator[dict[str, Any]]:
    """Records for clips [start, stop) of a token tar, streamed (members before `start` are skipped
    unread); clips are counted in member order, each being a `.npy` and a `.json` of one name."""
    pending: dict[str, dict[str, bytes]] = {}
    index = 0
    with tarfile.open(fileobj=handle, mode="r|") as tar:
        for member in tar:
            if index >= stop:
                return
            if not member.isfile():
                continue
            name, _, ext = member.name.rpartition(".")
            parts = pending.setdefault(name, {})
            extracted = tar.extractfile(member) if index >= start else None
            parts[ext] = extracted.read() if extracted else b""
            if "npy" in parts and "json" in parts:
                del pending[name]
                if index >= start:
                    yield _tar_record(parts["npy"], parts["json"])
                index += 1


def _parse_meta(text: str | None, key: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        log.warning("clip %s: meta is not valid JSON (%s); giving meta=None", key, exc)
        return None


def _caption(meta: Any) -> str | None:
    if isinstance(meta, dict):
        for name in ("caption", "text", "txt"):
            if isinstance(meta.get(name), str):
                return meta[name]
    return None


def to_item(row: dict[str, Any]) -> dict[str, Any]:
    """The training item for one record (see the module docstring for its fields)."""
    key = row.get("key", "?")
    item = {name: row[name] for name in SCALAR_COLUMNS if name in row and name != "meta"}
    item["meta"] = _parse_meta(row.get("meta"), key)
    item["caption"] = _caption(item["meta"])
    shape = row["shape"]
    if "ids" in row:
        ids = row["ids"]
        if ids.size != int(np.prod(shape)):
            raise ValueError(f"clip {key}: {ids.size} ids do not fill token_shape {list(shape)}")
        # widen on the integer side: uint16 -> int64 is exact, no float ever involved
        item["tokens"] = torch.from_numpy(ids.astype(np.int64)).reshape(shape)
    else:
        dtype = LATENT_DTYPES.get(row["latent_dtype"])
        if dtype is None:
            raise ValueError(f"clip {key}: unknown latent_dtype {row['latent_dtype']!r}")
        flat = torch.frombuffer(bytearray(row["latent_bytes"]), dtype=dtype)
        item["latents"] = flat.reshape(shape)
    return item
