"""Dead-letter rows: `errors/<shard-id>.parquet`, one row per sample (or shard) that could not
be tokenized. Written for every finished shard, possibly with zero rows, so that every token
file has an errors file beside it and readers never guess whether one is missing.

Versioned by `ERRORS_SCHEMA_VERSION` in the file's key-value metadata.
"""

from __future__ import annotations

import pyarrow as pa

ERRORS_SCHEMA_VERSION = 2  # 2: source_member

META_ERRORS_SCHEMA_VERSION = "tokenmill.errors_schema_version"


def error_schema(metadata: dict[str, str] | None = None) -> pa.Schema:
    """The Arrow schema of dead-letter rows (fields of `pipeline.records.DeadLetter` + reason)."""
    meta = {META_ERRORS_SCHEMA_VERSION: str(ERRORS_SCHEMA_VERSION)}
    meta.update(metadata or {})
    return pa.schema(
        [
            pa.field("source_url", pa.string(), nullable=False),
            pa.field("sample_key", pa.string(), nullable=False),  # "" for a shard-level failure
            pa.field("stage", pa.string(), nullable=False),
            pa.field("error_type", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),  # "<stage>:<error_type>"
            pa.field("message", pa.string(), nullable=False),
            pa.field("source_member", pa.string(), nullable=False),  # "" for a shard-level failure
        ],
        metadata=meta,
    )
