"""The records that flow through the pipeline.

    Sample     one WebDataset sample: key + members (extension -> bytes), read from a shard
    Clip       one fixed-length clip cut from a sample's video, frames uint8 [T, H, W, 3]
    DeadLetter a sample (or shard) that could not be turned into clips, with its reason
    ShardStats per-shard counters: every sample is either ok or failed, every drop has a reason

Names here are part of the output contract (token rows, error rows, manifest), so they are
defined once and imported everywhere.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def shard_id(url: str) -> str:
    """Stable id of an input shard: readable stem plus a hash of the full URL.

    The stem keeps ids human-friendly; the hash keeps two shards with the same file name in
    different folders or buckets apart. Used for output file names and manifest records.
    """
    base = url.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", base)[:64] or "shard"
    digest = hashlib.sha1(url.encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}"


def clip_key(shard: str, sample_key: str, clip_index: int) -> str:
    """Unique, rerun-stable key of a clip in a job's output.

    WebDataset sample keys never contain '.', so '.' separates the parts unambiguously.
    """
    return f"{shard}.{sample_key}.{clip_index:04d}"


@dataclass
class Sample:
    key: str
    source_url: str
    members: dict[str, bytes]  # extension without the leading dot ("mp4", "json") -> raw bytes


@dataclass
class Clip:
    key: str
    source_url: str
    sample_key: str
    clip_index: int
    start_frame: int  # index of the first frame, at the sampled rate
    fps: float  # rate of the frames in this clip
    frames: np.ndarray  # uint8 [T, H, W, 3], channels-last
    meta: str | None = None  # the sample's sidecar JSON as text (null when absent or broken)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class DeadLetter:
    source_url: str
    sample_key: str  # "" for shard-level failures
    stage: str  # read | decode | clip | meta | tokenize | write | shard
    error_type: str  # short class of the failure, e.g. "ZeroByteFile", "DecodeError"
    message: str

    @property
    def reason(self) -> str:
        return f"{self.stage}:{self.error_type}"


@dataclass
class ShardStats:
    """Counters for one shard. `samples_total == samples_ok + samples_failed` always."""

    samples_total: int = 0
    samples_ok: int = 0
    samples_failed: int = 0
    clips: int = 0
    frames: int = 0
    tokens: int = 0
    video_seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)  # DeadLetter.reason -> count
    notes: Counter[str] = field(default_factory=Counter)  # non-fatal: "too_short", "bad_sidecar"
    seconds: Counter[str] = field(default_factory=Counter)  # stage -> wall seconds
    # set when the shard itself is damaged (e.g. truncated tar): the samples before the damage
    # are still processed and written; the shard then counts as failed with this reason
    shard_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples_total": self.samples_total,
            "samples_ok": self.samples_ok,
            "samples_failed": self.samples_failed,
            "clips": self.clips,
            "frames": self.frames,
            "tokens": self.tokens,
            "video_seconds": self.video_seconds,
            "failures": dict(self.failures),
            "notes": dict(self.notes),
            "seconds": dict(self.seconds),
            "shard_error": self.shard_error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardStats:
        return cls(
            samples_total=data["samples_total"],
            samples_ok=data["samples_ok"],
            samples_failed=data["samples_failed"],
            clips=data["clips"],
            frames=data.get("frames", 0),
            tokens=data.get("tokens", 0),
            video_seconds=data.get("video_seconds", 0.0),
            failures=Counter(data.get("failures", {})),
            notes=Counter(data.get("notes", {})),
            seconds=Counter(data.get("seconds", {})),
            shard_error=data.get("shard_error"),
        )
