"""Writing one input shard's outputs: token file, error file, then the manifest record.

    w = ShardWriter(location, shard_id, source_url, fmt="parquet", file_metadata=meta)
    w.add(clip_or_info, encoded, tokenizer_name)   # encoded: ids [t,h,w] or latent [c,t,h,w]
    w.add_error(dead_letter)
    record = w.commit(stats)                       # publish files, then create the record
    # on any failure: w.abort() (also done by `with ShardWriter(...) as w:` on an exception)

Publication protocol (see docs/output.md for the failure cases):
1. Files are written to temporaries: `tokens/_tmp/...` beside the final names on local disk, a
   local temp dir for an object store. Readers skip names starting with "_".
2. Every attempt has its own id; its files are published whole under names that carry it
   (`tokens/<shard-id>.<attempt-id>.parquet`), so no attempt can replace another's bytes.
3. The record `_manifest/<shard-id>.json`, naming this attempt's files, is created exclusively
   (`os.link` / `If-None-Match: *`). Whoever creates it wins; the files it names never change.
4. A loser (the record exists: before publishing, or when its create fails) removes its own
   published files and returns the winner's record. An attempt that fails or is cancelled after
   publishing removes its own files too, unless its record was created.
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
from pipeline.writers.location import OutputLocation
from pipeline.writers.token_files import ClipInfo, ParquetTokenFile, TarTokenFile, normalise, write_error_file
from schemas.manifest import ManifestRecord, OutputFile
from schemas.tokens import META_FINGERPRINT, META_SHARD_ID, META_SOURCE_URL, META_TOKENIZER_CONFIG, Kind

log = logging.getLogger(__name__)

__all__ = ["ClipInfo", "ShardWriter", "record_path"]


def record_path(shard_id: str) -> str:
    """Path of a shard's manifest record relative to output.uri."""
    return OutputLocation.record_file(shard_id)


class ShardWriter:
    """Writes one shard's token and error files and publishes them with a manifest record.

    `kind` ("discrete" | "continuous"), when not given, comes from the tokenizer config in
    `file_metadata` (its "discrete" flag), else from the first `add`; it fixes the schema of
    an empty shard's file, so every file of a job has the same columns. `file_metadata` should come from
    `pipeline.writers.manifest.token_file_metadata` (tokenizer config, weights hash, fingerprint).
    """

    def __init__(self, output: OutputLocation | str, shard_id: str, source_url: str, fmt: str = "parquet",
                 file_metadata: dict[str, str] | None = None, storage_options: dict[str, Any] | None = None,
                 attempt: int = 1, kind: Kind | None = None, optional_columns: tuple[str, ...] = (),
                 extra: dict[str, Any] | None = None):
        self.location = OutputLocation.of(output, storage_options)
        self.shard_id, self.source_url = shard_id, source_url
        self.fmt, self.attempt = fmt, attempt
        self.optional_columns = optional_columns  # schemas.tokens.OPTIONAL_COLUMNS this job writes
        self.attempt_id = storage.unique_suffix()[:10]
        self.token_rel = self.location.token_file(shard_id, self.attempt_id, fmt)  # checks fmt
        self.error_rel = self.location.error_file(shard_id, self.attempt_id)
        self.extra = dict(extra or {})  # noted in the record (device, dtype)
        self.metadata = dict(file_metadata or {})
        self.metadata.update({META_SHARD_ID: shard_id, META_SOURCE_URL: source_url})
        self.kind = kind or _kind_from_config(self.metadata.get(META_TOKENIZER_CONFIG))
        self.started_at = time.time()
        self._errors: list[dict[str, str]] = []
        self._tokens: ParquetTokenFile | TarTokenFile | None = None
        self._positions = 0
        self._closed = False
        self._published: list[str] = []  # full paths of this attempt's published files, not yet recorded
        self._tmp_dir, self._tmp_local = self._make_tmp_dir()
        self._tmp_tokens = os.path.join(self._tmp_dir, os.path.basename(self.token_rel))
        self._tmp_errors = os.path.join(self._tmp_dir, f"{shard_id}.{self.attempt_id}.errors.parquet")

    @property
    def fs(self) -> Any:
        return self.location.fs

    def _make_tmp_dir(self) -> tuple[str, bool]:
        if self.location.is_local:
            # beside the final names, so publishing is a rename within one filesystem
            path = self.location.tmp_dir(self.location.TOKENS)
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
        """Finish, publish and record the shard; returns the record that now stands for it
        (this attempt's, or the winner's if another attempt recorded the shard first)."""
        self._check_open()
        try:
            record = self._finish_files(stats)
            existing = self._read_record()
            if existing is not None:
                log.info("shard %s already has a record (attempt %s); discarding attempt %s",
                         self.shard_id, existing.attempt_id or existing.attempt, self.attempt_id)
                return existing
            self._publish()
            return self._create_record(record)
        except BaseException:
            self._settle_unrecorded()
            raise
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
            "tokens": self._describe(self._tmp_tokens, self.token_rel, self.rows, self._row_groups()),
            "errors": self._describe(self._tmp_errors, self.error_rel, len(self._errors)),
        }
        return ManifestRecord(
            shard_id=self.shard_id, source_url=self.source_url, attempt=self.attempt, outputs=outputs,
            stats=stats_dict, fingerprint=self._fingerprint_digest(), finished_at=0.0,
            started_at=self.started_at, worker=storage.worker_id(), format=self.fmt,
            extra={"kind": self.kind, **self.extra}, attempt_id=self.attempt_id,
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
        sha, md5 = storage.file_digests(local)
        return OutputFile(path=rel, size=os.path.getsize(local), checksum=sha, rows=rows, md5=md5,
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

    def _read_record(self) -> ManifestRecord | None:
        path = self.location.path(record_path(self.shard_id))
        try:
            data = storage.read_bytes(self.fs, path)
        except FileNotFoundError:
            return None
        return ManifestRecord.from_dict(json.loads(data))

    def _publish(self) -> None:
        for local, rel in ((self._tmp_tokens, self.token_rel), (self._tmp_errors, self.error_rel)):
            final = self.location.path(rel)
            self._published.append(final)  # before the upload: a half-done one is ours to remove
            storage.publish_file(self.fs, local, final)

    def _create_record(self, record: ManifestRecord) -> ManifestRecord:
        record.finished_at = time.time()
        path = self.location.path(record_path(self.shard_id))
        if storage.put_bytes(self.fs, path, record.to_json_bytes(), exclusive=True):
            self._published = []  # the record owns them now
            return record
        winner = self._read_record()
        if winner is not None and winner.attempt_id == self.attempt_id:
            # our create landed, but its answer was lost and the client's retry was refused
            self._published = []
            return winner
        log.info("shard %s: attempt %s recorded first; removing attempt %s's files", self.shard_id,
                 winner.attempt_id if winner else "?", self.attempt_id)
        self._unpublish()
        if winner is None:  # only an operator deleting the record in between gets here
            raise RuntimeError(f"shard {self.shard_id}: the record that beat attempt {self.attempt_id} vanished")
        return winner

    def _settle_unrecorded(self) -> None:
        """After a failure: remove this attempt's published files unless its record stands.

        If the failure hid whether our record was created (a lost PUT response), the record is
        read back; when even that fails the files stay, and the next run's clean-up (which
        keeps only recorded files) removes them if they are not ours to keep.
        """
        if not self._published:
            return
        try:
            standing = self._read_record()
        except Exception:  # noqa: BLE001 - cannot tell: leave the files to the next clean-up
            log.warning("shard %s: cannot tell whether attempt %s was recorded; leaving its files",
                        self.shard_id, self.attempt_id)
            return
        if standing is not None and standing.attempt_id == self.attempt_id:
            self._published = []
            return
        self._unpublish()

    def _unpublish(self) -> None:
        try:
            storage.remove_files(self.fs, self._published)
        except Exception:  # noqa: BLE001 - unrecorded files are removed by the next clean-up
            log.warning("shard %s: could not remove attempt %s's files", self.shard_id, self.attempt_id,
                        exc_info=True)
        self._published = []

    def abort(self) -> None:
        """Discard everything this attempt wrote and no record names (temporaries, and files
        published under this attempt's names if its record was not created)."""
        if self._closed:
            self._settle_unrecorded()
            return
        if self._tokens is not None:
            try:
                self._tokens.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                log.debug("closing an aborted token file failed", exc_info=True)
        self._settle_unrecorded()
        self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        prefix = f"{self.shard_id}.{self.attempt_id}."
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

