"""On-disk records of the output location: manifest records (`_manifest/<shard-id>.json`), the
job file (`job.json`) and the driver's lease (`_lease.json`). All are JSON with a `version` field.

A manifest record is written once per finished input shard, after that shard's token and error
files are published; it is the only thing readers and resume trust. `outputs` maps a role
("tokens", "errors") to the published file, its size and checksum, so that a reader can verify
a file without trusting the directory it sits in. The files are named by the attempt that wrote
them (`attempt_id`), so no other attempt can ever change the bytes a record describes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

MANIFEST_VERSION = 1
JOB_FILE_VERSION = 1

# paths relative to output.uri
JOB_FILE = "job.json"
SUMMARY_FILE = "summary.json"
TOKENS_DIR = "tokens"
ERRORS_DIR = "errors"
MANIFEST_DIR = "_manifest"
TMP_DIR = "_tmp"  # under each of the above; names starting with "_" are skipped by readers
MANIFEST_INDEX = "_index.jsonl.gz"  # compacted records, a cache of the listing (see docs)
SUPERSEDED_DIR = "_superseded"  # under _manifest/: records replaced because their files were damaged
LEASE_FILE = "_lease.json"  # the running driver's claim on the output (pipeline/writers/lease.py)
LEASE_VERSION = 1


@dataclass
class OutputFile:
    path: str  # relative to output.uri, e.g. "tokens/shards-000000-1a2b3c4d.parquet"
    size: int  # bytes
    checksum: str  # "sha256:<hex>" of the whole file
    rows: int  # clips (tokens) or dead letters (errors)
    md5: str = ""  # hex MD5 of the file: what an S3 listing reports as the ETag of a simple PUT
    # rows of each Parquet row group of a token file (a token tar: [rows], it is streamed), so a
    # loader plans its reads from the manifest alone; None in records written before it existed
    row_groups: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "size": self.size, "checksum": self.checksum, "rows": self.rows,
                                "md5": self.md5}
        if self.row_groups is not None:
            data["row_groups"] = self.row_groups
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputFile:
        groups = data.get("row_groups")
        return cls(path=data["path"], size=int(data["size"]), checksum=data["checksum"], rows=int(data["rows"]),
                   md5=str(data.get("md5", "")), row_groups=[int(n) for n in groups] if groups is not None else None)


@dataclass
class ManifestRecord:
    shard_id: str
    source_url: str
    attempt: int
    outputs: dict[str, OutputFile]  # "tokens" | "errors" -> file
    stats: dict[str, Any]  # pipeline.records.ShardStats.to_dict()
    fingerprint: str  # the job fingerprint's digest
    finished_at: float  # unix seconds
    started_at: float  # unix seconds, when this attempt started writing
    worker: str = ""  # host:pid of the process that published
    format: str = "parquet"
    version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # kind, device, dtype
    attempt_id: str = ""  # names this attempt's files; unique across attempts, retries and drivers

    def to_dict(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict: that deep-copies every value and dominated the time
        # of indexing 100k records (bench/bench_manifest.py)
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["outputs"] = {k: v.to_dict() for k, v in self.outputs.items()}
        return data

    def to_json_bytes(self) -> bytes:
        """The exact bytes of a record file: writers and the manifest index agree on this form."""
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestRecord:
        version = int(data.get("version", 0))
        if version > MANIFEST_VERSION:
            raise ValueError(
                f"manifest record of shard {data.get('shard_id')!r} has version {version}; "
                f"this tokenmill reads up to {MANIFEST_VERSION}"
            )
        return cls(
            shard_id=data["shard_id"],
            source_url=data["source_url"],
            attempt=int(data["attempt"]),
            outputs={k: OutputFile.from_dict(v) for k, v in data["outputs"].items()},
            stats=dict(data["stats"]),
            fingerprint=data["fingerprint"],
            finished_at=float(data["finished_at"]),
            started_at=float(data.get("started_at", data["finished_at"])),
            worker=data.get("worker", ""),
            format=data.get("format", "parquet"),
            version=version,
            extra=dict(data.get("extra", {})),
            attempt_id=str(data.get("attempt_id", "")),
        )


@dataclass
class JobFile:
    """`job.json`: the resolved, redacted spec and the fingerprint every output was made with."""

    spec: dict[str, Any]  # JobSpec.redacted(): storage option values never written
    fingerprint: dict[str, Any]  # components + "digest"
    shards_total: int
    created_at: float
    updated_at: float
    version: int = JOB_FILE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobFile:
        return cls(
            spec=dict(data["spec"]),
            fingerprint=dict(data["fingerprint"]),
            shards_total=int(data["shards_total"]),
            created_at=float(data["created_at"]),
            updated_at=float(data.get("updated_at", data["created_at"])),
            version=int(data.get("version", 0)),
        )


@dataclass
class LeaseFile:
    """`_lease.json`: which driver writes to the output now, and when it last said it is alive.

    `host`, `boot_id` and `pid_namespace` say where `pid` can be checked: a reader on the same
    machine and pid namespace can prove the holder dead (pid gone, or reused: another start
    time); anywhere else the holder counts as dead only after `timeout_s` without a heartbeat.
    """

    run_id: str  # unique per driver run
    host: str
    pid: int
    pid_start: str  # the process's start time (/proc/<pid>/stat field 22): detects pid reuse
    boot_id: str
    pid_namespace: str
    started_at: float  # unix seconds
    heartbeat_at: float  # unix seconds, rewritten every timeout_s / 4
    timeout_s: float
    ray_job_id: str | None = None
    version: int = LEASE_VERSION

    def to_json_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaseFile:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
