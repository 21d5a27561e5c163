"""Writing one input shard's outputs: token file, error file, then the manifest record.

    w = ShardWriter(output_uri, shard_id, source_url, fmt="parquet", file_metadata=meta)
    w.add(clip_or_info, encoded, tokenizer_name)   # encoded: ids [t,h,w] or latent [c,t,h,w]
    w.add_error(dead_letter)
    record = w.commit(stats)                       # publish files, then write the record
    # on any failure: w.abort() (also done by `with ShardWriter(...) as w:` on an exception)

Publication (the rules resume and readers rely on, see docs/output.md):
1. Files are written to temporaries: `tokens/_tmp/<id>.<uuid>.<ext>` beside the final name on
   local disk, a local temp dir for an object store. Readers skip names starting with "_".
2. If a record for the shard already exists, this attempt lost: temporaries are discarded and
   the existing record returned; a published file a record points to is never replaced.
3. Files are published whole (rename locally, one upload on S3), tokens and errors.
4. The record is created exclusively (`os.link` / `If-None-Match: *`). If another attempt's
   record appeared meanwhile and its checksums differ from ours, our publish may have replaced
   its files, so we publish ours again and replace the record: record and files always agree.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from pipeline.records import DeadLetter, ShardStats
from pipeline.writers import storage
from pipeline.writers.token_files import ClipInfo, ParquetTokenFile, TarTokenFile, normalise, write_error_file
from schemas.manifest import ERRORS_DIR, MANIFEST_DIR, TMP_DIR, TOKENS_DIR, ManifestRecord, OutputFile
from schemas.tokens import META_FINGERPRINT, META_SHARD_ID, META_SOURCE_URL, META_TOKENIZER_CONFIG, Kind

log = logging.getLogger(__name__)

__all__ = ["ClipInfo", "ShardWriter", "token_path", "error_path", "record_path"]

_EXT = {"parquet": "parquet", "webdataset": "tar"}


def token_path(shard_id: str, fmt: str) -> str:
    """Path of a shard's token file relative to output.uri."""
    return f"{TOKENS_DIR}/{shard_id}.{_EXT[fmt]}"


def error_path(shard_id: str) -> str:
    return f"{ERRORS_DIR}/{shard_id}.parquet"


def record_path(shard_id: str) -> str:
    return f"{MANIFEST_DIR}/{shard_id}.json"


class ShardWriter:
    """Writes one shard's token and error files and publishes them with a manifest record.

    `kind` ("discrete" | "continuous"), when not given, comes from the tokenizer config in
    `file_metadata` (its "discrete" flag), else from the first `add`; it fixes the schema of
    an empty shard's file, so every file of a job has the same columns. `file_metadata` should come from
    `pipeline.writers.manifest.token_file_metadata` (tokenizer config, weights hash, fingerprint).
    """

    def __init__(self, output_uri: str, shard_id: str, source_url: str, fmt: str = "parquet",
                 file_metadata: dict[str, str] | None = None, storage_options: dict[str, Any] | None = None,
                 attempt: int = 1, kind: Kind | None = None, optional_columns: tuple[str, ...] = ()):
        if fmt not in _EXT:
            raise ValueError(f"output format must be one of {sorted(_EXT)}, got {fmt!r}")
        self.output_uri, self.shard_id, self.source_url = output_uri, shard_id, source_url
        self.fmt, self.attempt = fmt, attempt
        self.optional_columns = optional_columns  # schemas.tokens.OPTIONAL_COLUMNS this job writes
        self.fs, self.root = storage.get_fs(output_uri, storage_options)
        self.metadata = dict(file_metadata or {})
        self.metadata.update({META_SHARD_ID: shard_id, META_SOURCE_URL: source_url})
        self.kind = kind or _kind_from_config(self.metadata.get(META_TOKENIZER_CONFIG))
        self.started_at = time.time()
        self._errors: list[dict[str, str]] = []
        self._tokens: ParquetTokenFile | TarTokenFile | None = None
        self._positions = 0
        self._closed = False
        self._tmp_dir, self._tmp_local = self._make_tmp_dir()
        suffix = storage.unique_suffix()
        self._tmp_tokens = os.path.join(self._tmp_dir, f"{shard_id}.{suffix}.{_EXT[fmt]}")
        self._tmp_errors = os.path.join(self._tmp_dir, f"{shard_id}.{suffix}.errors.parquet")

    def _make_tmp_dir(self) -> tuple[str, bool]:
        if storage.is_local(self.fs):
            # beside the final names, so publishing is a rename within one filesystem
            path = os.path.join(self.root, TOKENS_DIR, TMP_DIR)
            os.makedirs(path, exist_ok=True)
            return path, False
        return tempfile.mkdtemp(prefix=f"tokenmill-{self.shard_id}-"), True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()

    @property
    def rows(self) -> int:
        return self._tokens.rows if self._tokens else 0

    def add(self, clip: Any, encoded: Any, tokenizer_name: str) -> None:
        """Add one clip's tokens. `clip`: a Clip (frames used only for their shape) or ClipInfo."""
        self._check_open()
        info = ClipInfo.from_clip(clip)
        enc = normalise(encoded, info.key)
        if self._tokens is None:
            self._open_tokens(enc.kind)
        assert self._tokens is not None
        self._tokens.add(info, enc, tokenizer_name)
        self._positions += enc.positions

    def _open_tokens(self, kind: Kind) -> None:
        if self.kind is not None and kind != self.kind:
            raise ValueError(f"shard {self.shard_id}: writer expects {self.kind} output, got {kind}")
        self.kind = kind
        cls = ParquetTokenFile if self.fmt == "parquet" else TarTokenFile
        self._tokens = cls(self._tmp_tokens, kind, self.metadata, self.optional_columns)

    def add_error(self, dead: DeadLetter) -> None:
        self._check_open()
        self._errors.append({
            "source_url": dead.source_url, "sample_key": dead.sample_key, "stage": dead.stage,
            "error_type": dead.error_type, "reason": dead.reason, "message": dead.message,
            "source_member": dead.source_member,
        })

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"shard writer for {self.shard_id} is already committed or aborted")

    def commit(self, stats: ShardStats) -> ManifestRecord:
        """Finish, publish and record the shard; returns the record that now stands for it."""
        self._check_open()
        try:
            record = self._finish_files(stats)
            existing = self._read_record()
            if existing is not None:
                log.info("shard %s already has a record (attempt %d); discarding attempt %d",
                         self.shard_id, existing.attempt, self.attempt)
                return existing
            self._publish()
            return self._write_record(record)
        finally:
            self._cleanup()

    def _finish_files(self, stats: ShardStats) -> ManifestRecord:
        if self._tokens is None:
            self._open_tokens(self.kind or "discrete")
        assert self._tokens is not None
        self._tokens.close()
        write_error_file(self._tmp_errors, self._errors, self.metadata)
        stats_dict = self._reconcile(stats)
        outputs = {
            "tokens": self._describe(self._tmp_tokens, token_path(self.shard_id, self.fmt), self.rows,
                                     self._row_groups()),
            "errors": self._describe(self._tmp_errors, error_path(self.shard_id), len(self._errors)),
        }
        return ManifestRecord(
            shard_id=self.shard_id, source_url=self.source_url, attempt=self.attempt, outputs=outputs,
            stats=stats_dict, fingerprint=self._fingerprint_digest(), finished_at=0.0,
            started_at=self.started_at, worker=storage.worker_id(), format=self.fmt,
            extra={"kind": self.kind},
        )

    def _reconcile(self, stats: ShardStats) -> dict[str, Any]:
        """The record states what was written: clips and tokens come from the files themselves."""
        data = stats.to_dict()
        for name, written in (("clips", self.rows), ("tokens", self._positions)):
            if data[name] not in (0, written):
                log.warning("shard %s: stats say %d %s but %d were written; recording %d",
                            self.shard_id, data[name], name, written, written)
            data[name] = written
        return data

    @staticmethod
    def _describe(local: str, rel: str, rows: int, row_groups: list[int] | None = None) -> OutputFile:
        return OutputFile(path=rel, size=os.path.getsize(local), checksum=storage.file_checksum(local), rows=rows,
                          row_groups=row_groups)

    def _row_groups(self) -> list[int]:
        """Rows per row group of the finished token file, from its (local) footer: the record
        carries the layout so that loaders never open the footer themselves."""
        if self.fmt != "parquet":
            return [self.rows]  # a token tar is one streamed group
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(self._tmp_tokens).metadata
        return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]

    def _fingerprint_digest(self) -> str:
        raw = self.metadata.get(META_FINGERPRINT, "")
        try:
            return str(json.loads(raw).get("digest", "")) if raw else ""
        except (ValueError, AttributeError):
            return raw

    def _final(self, rel: str) -> str:
        return storage.join(self.root, rel)

    def _read_record(self) -> ManifestRecord | None:
        path = self._final(record_path(self.shard_id))
        if not storage.exists(self.fs, path):
            return None
        return ManifestRecord.from_dict(json.loads(storage.read_bytes(self.fs, path)))

    def _publish(self) -> None:
        # keep the temporaries until the record is settled (step 4 may publish again)
        for local, rel in ((self._tmp_tokens, token_path(self.shard_id, self.fmt)),
                           (self._tmp_errors, error_path(self.shard_id))):
            staged = self._stage_copy(local)
            storage.publish_file(self.fs, staged, self._final(rel))

    def _stage_copy(self, local: str) -> str:
        staged = f"{local}.{storage.unique_suffix()}.pub"
        try:
            os.link(local, staged)  # same inode: no data copied
        except OSError:
            shutil.copyfile(local, staged)
        return staged

    def _write_record(self, record: ManifestRecord) -> ManifestRecord:
        record.finished_at = time.time()
        data = record.to_json_bytes()
        path = self._final(record_path(self.shard_id))
        if storage.put_bytes(self.fs, path, data, exclusive=True):
            return record
        winner = self._read_record()
        if winner is not None and _same_files(winner, record):
            log.info("shard %s: attempt %d finished identically first", self.shard_id, winner.attempt)
            return winner
        log.warning("shard %s: a racing attempt recorded different files; republishing attempt %d",
                    self.shard_id, self.attempt)
        self._publish()
        storage.put_bytes(self.fs, path, data, exclusive=False)
        return record

    def abort(self) -> None:
        """Discard everything this attempt wrote (temporaries only; published files untouched)."""
        if self._closed:
            return
        if self._tokens is not None:
            try:
                self._tokens.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                log.debug("closing an aborted token file failed", exc_info=True)
        self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        prefix = os.path.basename(self._tmp_tokens).rsplit(".", 1)[0]
        for name in os.listdir(self._tmp_dir) if os.path.isdir(self._tmp_dir) else []:
            if name.startswith(prefix):
                os.remove(os.path.join(self._tmp_dir, name))
        if self._tmp_local:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)


def _kind_from_config(config_json: str | None) -> Kind | None:
    try:
        discrete = json.loads(config_json or "{}").get("discrete")
    except (ValueError, AttributeError):
        return None
    if discrete is None:
        return None
    return "discrete" if discrete else "continuous"


def _same_files(a: ManifestRecord, b: ManifestRecord) -> bool:
    return {k: v.checksum for k, v in a.outputs.items()} == {k: v.checksum for k, v in b.outputs.items()}
