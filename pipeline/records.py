"""The records that flow through the pipeline.

    Sample     one WebDataset sample: key + members (extension -> bytes), read from a shard
    Clip       one fixed-length clip cut from a sample's video, frames uint8 [T, H, W, 3], or one
               chunk of a whole-video row (`part` set; the row ends at the chunk with `final`)
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


def shard_id(name: str, size: int | None = None) -> str:
    """Stable id of an input shard: readable stem plus 8 hex of a hash of its name (and size).

    A job names a shard by its path relative to the root of the input pattern it came from
    (`pipeline.readers.sources.InputShard`) and its size, so moving or remounting the input
    root keeps every id, while `a/x.tar` and `b/x.tar` under one root stay apart. A bare URL
    (size None) gives the id that URL had before ids became root-relative.
    """
    base = name.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", base)[:64] or "shard"
    identity = name if size is None else f"{name}\n{size}"
    digest = hashlib.sha1(identity.encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}"


# The key grammar: one or more '/'-separated segments of ASCII letters, digits, '_', '-' and '.',
# each starting with a letter, digit or '_' and at most 128 characters long (so no empty, '.' or
# '..' segment, no leading '/', no control, space or non-ASCII character), optionally ending in
# '~' + 12 hex digits (the mark of an escaped key), MAX_KEY_CHARS in all.
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
_SAFE_KEY = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*(?:~[0-9a-f]{{12}})?")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
MAX_KEY_CHARS = 240


def safe_key(raw: str) -> str:
    """The one definition of a key that may become a path (tar member, file name).

    A key in the grammar above is returned unchanged; any other is escaped: unsafe characters
    become '_', empty / '.' / '..' segments and leading dots and dashes are dropped, the rest is
    cut to fit, and '~' + 12 hex digits of SHA-1 of the raw key are appended. The hash keeps
    escaped keys distinct from each other and from every unescaped key (which never holds '~'
    except as this mark), and stable across reruns; `safe_key(safe_key(k)) == safe_key(k)`.
    """
    if len(raw) <= MAX_KEY_CHARS and _SAFE_KEY.fullmatch(raw):
        return raw
    digest = hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{_readable_part(raw, MAX_KEY_CHARS - 13)}~{digest}"


def _readable_part(raw: str, budget: int) -> str:
    parts: list[str] = []
    for segment in raw.split("/"):
        segment = _UNSAFE_RUN.sub("_", segment)[:128].lstrip(".-").rstrip(".")
        if segment and len("/".join([*parts, segment])) <= budget:
            parts.append(segment)
    return "/".join(parts) or "key"


def clip_key(shard: str, sample_key: str, clip_index: int) -> str:
    """Unique, rerun-stable key of a clip in a job's output: `<shard>.<safe sample key>.<NNNN>`.

    Shard ids hold no '.' and the clip index is the last '.'-part, so the parts stay apart even
    though folder segments of a sample key may hold dots. The key is itself in the key grammar.
    """
    return f"{shard}.{safe_key(sample_key)}.{clip_index:04d}"


@dataclass
class Sample:
    key: str  # safe_key of the key the shard spells
    source_url: str
    members: dict[str, bytes]  # extension without the leading dot ("mp4", "json") -> raw bytes
    names: dict[str, str] = field(default_factory=dict)  # extension -> member name as in the shard
    files: dict[str, str] = field(default_factory=dict)  # extension -> temp file of a spooled member
    refusal: tuple[str, str] | None = None  # (error_type, message): a member was over a limit

    def source_member(self, ext: str | None = None) -> str:
        """The shard's own name of member `ext` (default: the first member): provenance."""
        if ext is not None and ext in self.names:
            return self.names[ext]
        return next(iter(self.names.values()), "")


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
    source_member: str | None = None  # the video's tar member name exactly as the shard has it
    scene: int | None = None  # shot index in the video (clips.split_scenes)
    scene_start: int | None = None  # the shot's first frame, at the sampled rate
    motion: float | None = None  # motion score (clips.min_motion); a row's is on its final chunk
    part: int | None = None  # chunk index in a whole-video row (clips.num_frames: all)
    final: bool = True  # the row's last chunk
    dropped: str | None = None  # a row's final chunk: the note it was dropped for (its tokens unwritten)

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
    source_member: str = ""  # the sample's member name as the shard has it ("" for a shard)

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
    scene_cuts: int = 0  # shot cuts found (clips.split_scenes)
    failures: Counter[str] = field(default_factory=Counter)  # DeadLetter.reason -> count
    notes: Counter[str] = field(default_factory=Counter)  # non-fatal: "too_short", "bad_sidecar"
    seconds: Counter[str] = field(default_factory=Counter)  # stage -> wall seconds
    quality: list[list[float]] = field(default_factory=list)  # [psnr, ssim] per sampled clip (quality.sample_rate)
    # set when the shard itself is damaged (e.g. truncated tar): the samples before the damage
    # are still processed and written; the shard then counts as failed with this reason
    shard_error: str | None = None
    # bytes of decoded frames sent to tokenizer actors on the shard task's own node ("same_node")
    # and on other nodes ("other_node"), resends included
    frame_bytes: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the manifest record; `scene_cuts`, `quality` and `frame_bytes` only where set."""
        added = {k: v for k, v in (("scene_cuts", self.scene_cuts), ("quality", [list(q) for q in self.quality]),
                                   ("frame_bytes", dict(self.frame_bytes))) if v}
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
            **added,
        }

    def add_quality(self, psnr: float, ssim: float) -> None:
        self.quality.append([round(float(psnr), 4), round(float(ssim), 5)])

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
            scene_cuts=data.get("scene_cuts", 0),
            failures=Counter(data.get("failures", {})),
            notes=Counter(data.get("notes", {})),
            seconds=Counter(data.get("seconds", {})),
            quality=[list(q) for q in data.get("quality", [])],
            shard_error=data.get("shard_error"),
            frame_bytes=Counter(data.get("frame_bytes", {})),
        )
