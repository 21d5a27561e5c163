"""The output location: one filesystem and root, resolved once, and the names of what lives there.

    loc = OutputLocation.of("s3://bucket/run", storage_options)
    loc.path(loc.TOKENS)                    -> "bucket/run/tokens"
    loc.token_file(shard_id, attempt, fmt)  -> "tokens/<shard-id>.<attempt>.parquet" (relative)

Every function of the output side takes an `OutputLocation` or, for callers outside a job, a
URI plus storage options (`OutputLocation.of` turns the pair into a location and passes a
location through unchanged), so a run resolves its filesystem once. A location pickles as its
URI and options: a Ray task rebuilds its own filesystem client instead of shipping a live one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.writers import storage
from schemas.manifest import (
    ERRORS_DIR,
    JOB_FILE,
    LEASE_FILE,
    MANIFEST_DIR,
    MANIFEST_INDEX,
    SUMMARY_FILE,
    SUPERSEDED_DIR,
    TMP_DIR,
    TOKENS_DIR,
)

_EXT = {"parquet": "parquet", "webdataset": "tar"}


@dataclass(frozen=True)
class OutputLocation:
    uri: str
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    fs: Any = field(default=None, compare=False, repr=False)
    root: str = ""

    # paths relative to the root
    TOKENS = TOKENS_DIR
    ERRORS = ERRORS_DIR
    MANIFEST = MANIFEST_DIR
    JOB = JOB_FILE
    SUMMARY = SUMMARY_FILE
    LEASE = LEASE_FILE
    INDEX = f"{MANIFEST_DIR}/{MANIFEST_INDEX}"
    SUPERSEDED = f"{MANIFEST_DIR}/{SUPERSEDED_DIR}"

    @classmethod
    def of(cls, where: OutputLocation | str, storage_options: dict[str, Any] | None = None) -> OutputLocation:
        """The location of `where` (a URI, resolved now; a location is returned as it is)."""
        if isinstance(where, OutputLocation):
            return where
        fs, root = storage.get_fs(where, storage_options)
        return cls(where, dict(storage_options or {}), fs, root)

    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, Any]]]:
        return (OutputLocation.of, (self.uri, self.storage_options))

    @property
    def is_local(self) -> bool:
        return storage.is_local(self.fs)

    def path(self, *rel: str) -> str:
        """Full path (no protocol) of a path relative to the output root."""
        return storage.join(self.root, *rel)

    def tmp_dir(self, sub: str) -> str:
        return self.path(sub, TMP_DIR)

    @staticmethod
    def token_file(shard_id: str, attempt_id: str, fmt: str) -> str:
        """Relative path of one attempt's token file: attempts never share a name."""
        if fmt not in _EXT:
            raise ValueError(f"output format must be one of {sorted(_EXT)}, got {fmt!r}")
        return f"{TOKENS_DIR}/{shard_id}.{attempt_id}.{_EXT[fmt]}"

    @staticmethod
    def error_file(shard_id: str, attempt_id: str) -> str:
        return f"{ERRORS_DIR}/{shard_id}.{attempt_id}.parquet"

    @staticmethod
    def record_file(shard_id: str) -> str:
        """Relative path of a shard's manifest record: one name per shard, created exclusively."""
        return f"{MANIFEST_DIR}/{shard_id}.json"
