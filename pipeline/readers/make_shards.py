"""`tokenmill make-shards`: pack a folder of videos (and their sidecars) into WebDataset shards.

    tokenmill make-shards videos/ more/*.mp4 --output shards/train --max-count 100 --max-size-mb 1024

Each video `dir/name.mp4` becomes one sample `<key>.mp4`, with `dir/name.json` and
`dir/name.txt` (same stem) as `<key>.json` / `<key>.txt` when they exist. Keys are the file stems
made WebDataset-safe (no '.', which separates key from extension), de-duplicated with a suffix.
A shard is closed when it holds --max-count samples or the next sample would push it past
--max-size-mb. Files are streamed into the tar (never read whole into memory), each shard is
written under a temporary name and renamed when complete. Inputs are sorted, so the same inputs
always give the same shards.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.readers.tar_stream import VIDEO_EXTENSIONS
from schemas.config import SpecError

log = logging.getLogger(__name__)

SIDECAR_EXTENSIONS = ("json", "txt")


@dataclass
class Entry:
    key: str
    files: list[tuple[str, Path]]  # (extension, path): the video first, then sidecars

    @property
    def size(self) -> int:
        # tar cost: one 512-byte header per member plus data padded to 512
        return sum(512 + -(-p.stat().st_size // 512) * 512 for _, p in self.files)


def _is_video(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS


def find_videos(inputs: list[str]) -> list[Path]:
    """Video files named by `inputs` (files, folders searched recursively, globs), sorted, unique."""
    found: set[Path] = set()
    for item in inputs:
        paths = [Path(p) for p in sorted(glob.glob(item, recursive=True))] if glob.has_magic(item) else [Path(item)]
        if not paths or not all(p.exists() for p in paths):
            raise SpecError("INPUT", f"no such file or folder: {item!r}")
        for path in paths:
            if path.is_dir():
                found.update(p for p in path.rglob("*") if p.is_file() and _is_video(p))
            elif _is_video(path):
                found.add(path)
    return sorted(found)


def plan_entries(videos: list[Path]) -> list[Entry]:
    entries, used = [], set()
    for video in videos:
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", video.stem) or "video"
        key, n = base, 1
        while key in used:
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        files = [(video.suffix.lower().lstrip("."), video)]
        for ext in SIDECAR_EXTENSIONS:
            sidecar = video.with_suffix(f".{ext}")
            if sidecar.is_file():
                files.append((ext, sidecar))
        entries.append(Entry(key, files))
    return entries


def group_shards(entries: list[Entry], max_count: int, max_bytes: float) -> Iterator[list[Entry]]:
    shard: list[Entry] = []
    size = 0
    for entry in entries:
        if shard and (len(shard) >= max_count or size + entry.size > max_bytes):
            yield shard
            shard, size = [], 0
        shard.append(entry)
        size += entry.size
    if shard:
        yield shard


def write_shard(path: str, entries: list[Entry]) -> None:
    """One tar, written under `path + '.tmp'` and renamed when complete."""
    tmp = f"{path}.tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for entry in entries:
            for ext, source in entry.files:
                info = tarfile.TarInfo(f"{entry.key}.{ext}")
                info.size, info.mtime, info.mode = source.stat().st_size, 0, 0o644
                with open(source, "rb") as f:
                    tar.addfile(info, f)
    os.replace(tmp, path)


def make_shards(inputs: list[str], prefix: str, max_count: int = 100, max_size_mb: float = 1024.0) -> list[str]:
    """Pack the videos named by `inputs` into `prefix-000000.tar`, ...; returns the shard paths."""
    if max_count < 1:
        raise SpecError("--max-count", "must be >= 1")
    if max_size_mb <= 0:
        raise SpecError("--max-size-mb", "must be > 0")
    videos = find_videos(inputs)
    if not videos:
        raise SpecError("INPUT", f"no video files ({', '.join(VIDEO_EXTENSIONS[:6])}, ...) in {inputs}")
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, shard in enumerate(group_shards(plan_entries(videos), max_count, max_size_mb * 1e6)):
        path = f"{prefix}-{index:06d}.tar"
        write_shard(path, shard)
        paths.append(path)
        log.info("wrote %s (%d samples)", path, len(shard))
    return paths


def cli_make_shards(args: argparse.Namespace) -> int:
    paths = make_shards(args.inputs, args.output, args.max_count, args.max_size_mb)
    for path in paths:
        print(path)
    return 0
