"""Token rows: the explicit Arrow schema of `tokens/<shard-id>.parquet` (and of the per-clip
`.json` + `.npy` pair in the WebDataset form).

Versioned by `TOKENS_SCHEMA_VERSION` (stored in every file's key-value metadata). Never inferred
from data: writers build tables against these schemas, so an empty shard and a full one have
the same columns and types.

    discrete    tokens       list<uint16>  the clip's ids flattened in raster order (t, h, w)
                token_shape  list<int32>   [t, h, w]
    continuous  latents      binary        the latent's raw bytes, C order, little-endian
                latent_shape list<int32>   [c, t, h, w]
                latent_dtype string        float32 | float16 | bfloat16

Optional columns (`OPTIONAL_COLUMNS`) are present in every file of a job whose spec turns their
feature on, and in no file of other jobs (so the schema follows from the spec, not the data):

    scene_index  int32    shot index in the video                  clips.split_scenes
    scene_start  int64    the shot's first frame (sampled rate)    clips.split_scenes
    motion       float32  motion score of the clip                 clips.min_motion
    psnr, ssim   float32  round-trip quality, null if not sampled  quality.sample_rate > 0
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

TOKENS_SCHEMA_VERSION = 2  # 2: source_member

# uint16 ids hold vocabularies up to 2**16 (Cosmos FSQ [8,8,8,5,5,5] has 64,000 ids)
MAX_VOCAB_SIZE = 1 << 16

Kind = Literal["discrete", "continuous"]
LATENT_DTYPES = ("float32", "float16", "bfloat16")

# file key-value metadata keys (all values are strings)
META_SCHEMA_VERSION = "tokenmill.schema_version"
META_KIND = "tokenmill.kind"
META_TOKENIZER_CONFIG = "tokenmill.tokenizer_config"  # JSON
META_WEIGHTS_HASH = "tokenmill.weights_hash"
META_FINGERPRINT = "tokenmill.fingerprint"  # JSON: components + digest
META_SHARD_ID = "tokenmill.shard_id"
META_SOURCE_URL = "tokenmill.source_url"

# clips per Parquet row group: small enough that a shuffling reader fetches little it does not
# need, large enough that per-group overhead stays negligible (see docs/output.md)
ROW_GROUP_ROWS = 256
ROW_GROUP_BYTES = 64 << 20

_COMMON = [
    pa.field("key", pa.string(), nullable=False),
    pa.field("source_url", pa.string(), nullable=False),
    pa.field("sample_key", pa.string(), nullable=False),
    pa.field("clip_index", pa.int32(), nullable=False),
    pa.field("start_frame", pa.int64(), nullable=False),
    pa.field("num_frames", pa.int32(), nullable=False),
    pa.field("fps", pa.float64(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("tokenizer", pa.string(), nullable=False),
    pa.field("meta", pa.string(), nullable=True),
    pa.field("source_member", pa.string(), nullable=True),  # the video's name in the input tar
]

_DISCRETE = [
    pa.field("tokens", pa.list_(pa.field("element", pa.uint16(), nullable=False)), nullable=False),
    pa.field("token_shape", pa.list_(pa.field("element", pa.int32(), nullable=False)), nullable=False),
]

_CONTINUOUS = [
    pa.field("latents", pa.binary(), nullable=False),
    pa.field("latent_shape", pa.list_(pa.field("element", pa.int32(), nullable=False)), nullable=False),
    pa.field("latent_dtype", pa.string(), nullable=False),
]


OPTIONAL_COLUMNS = {
    "scene_index": pa.field("scene_index", pa.int32(), nullable=True),
    "scene_start": pa.field("scene_start", pa.int64(), nullable=True),
    "motion": pa.field("motion", pa.float32(), nullable=True),
    "psnr": pa.field("psnr", pa.float32(), nullable=True),
    "ssim": pa.field("ssim", pa.float32(), nullable=True),
}


def token_schema(kind: Kind, metadata: dict[str, str] | None = None, optional: tuple[str, ...] = ()) -> pa.Schema:
    """The Arrow schema of token rows for a discrete or continuous tokenizer (plus `optional` columns)."""
    extra = [OPTIONAL_COLUMNS[name] for name in optional]
    if kind == "discrete":
        fields = _COMMON + extra + _DISCRETE
    elif kind == "continuous":
        fields = _COMMON + extra + _CONTINUOUS
    else:
        raise ValueError(f"token kind must be 'discrete' or 'continuous', got {kind!r}")
    meta = {META_SCHEMA_VERSION: str(TOKENS_SCHEMA_VERSION), META_KIND: kind}
    meta.update(metadata or {})
    return pa.schema(fields, metadata=meta)


def check_vocab_size(vocab_size: int, tokenizer: str = "") -> None:
    """Refuse a tokenizer whose ids do not fit uint16 (raises ValueError naming it)."""
    if vocab_size > MAX_VOCAB_SIZE:
        name = f"tokenizer {tokenizer!r}" if tokenizer else "the tokenizer"
        raise ValueError(
            f"{name} has a vocabulary of {vocab_size:,} ids; token shards store ids as uint16, "
            f"which holds at most {MAX_VOCAB_SIZE:,}"
        )
