"""The loader's index of a finished job's token files: `_manifest/_files.parquet`.

One row per manifest record, written by the driver when a run ends normally, so that a training
rank plans its reads from one small GET instead of listing `_manifest/` and opening every token
file's footer. Columnar (Parquet) rather than JSON: 100k rows parse in C in a fraction of a
second, where 100k JSON records take tens of seconds here.

    shard_id    string        the manifest record's shard id
    path        string        token file, relative to output.uri (as in the record)
    checksum    string        "sha256:..." of the token file, from the record
    format      string        parquet | webdataset
    row_groups  list<int64>   rows of each Parquet row group (a token tar: [rows])

Key-value metadata: `tokenmill.file_index_version` and `tokenmill.sealed_for`, the `updated_at`
of the job.json the run wrote; a later run rewrites job.json, so a reader that finds another
value knows records may have changed since and reads the manifest itself.
"""

from __future__ import annotations

import pyarrow as pa

FILE_INDEX_VERSION = 1
FILE_INDEX = "_manifest/_files.parquet"  # relative to output.uri; "_" keeps it out of record listings
META_VERSION = "tokenmill.file_index_version"
META_SEALED_FOR = "tokenmill.sealed_for"

FILE_INDEX_SCHEMA = pa.schema([
    pa.field("shard_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("checksum", pa.string(), nullable=False),
    pa.field("format", pa.string(), nullable=False),
    pa.field("row_groups", pa.list_(pa.int64()), nullable=False),
])
