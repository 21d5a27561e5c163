"""Streaming WebDataset reader: a tar byte stream -> Samples, one at a time, in order.

A small tar parser of our own instead of `tarfile`: in stream mode `tarfile` ends iteration
silently at a bad checksum or a cut header after the first member, which would make a damaged
shard look complete. Here every header checksum is verified and every short read is reported as
`CorruptShard`, after the complete samples before the damage have been yielded.

WebDataset convention: a member `dir/abc.seg.mp4` belongs to sample key `dir/abc` with extension
`seg.mp4` (key = path up to the first '.' of the base name); a sample's members are consecutive.
Only one sample's bytes are held in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pipeline.records import Sample

BLOCK = 512
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi", "m4v", "mpg", "mpeg", "ts", "flv", "wmv",
                    "ogv", "3gp", "y4m")
# a header claiming more than this is damage, not data: it would make us buffer a bogus sample
MAX_MEMBER_BYTES = 64 * 1024**3


class CorruptShard(Exception):
    """The tar stream itself is damaged (truncated, bad header). Samples before it were valid."""

    def __init__(self, error_type: str, message: str):
        self.error_type = error_type
        super().__init__(message)


def _read_exact(stream: BinaryIO, size: int, what: str) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(min(left, 16 * 1024 * 1024))
        if not chunk:
            raise CorruptShard("TruncatedShard", f"stream ended {left} bytes short inside {what}")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes over 8 GiB
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == unsigned


def _name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
    full = (prefix + b"/" + name) if prefix else name
    return full.decode("utf-8", "replace")


def _pax_path(data: bytes) -> str | None:
    path = None
    for record in data.split(b"\n"):
        _, _, kv = record.partition(b" ")
        key, _, value = kv.partition(b"=")
        if key == b"path":
            path = value.decode("utf-8", "replace")
    return path


def iter_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file in a tar stream. Raises CorruptShard on damage."""
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if len(header) == 0:
            return  # no end-of-archive blocks: tolerated, every member so far was complete
        if len(header) < BLOCK:
            raise CorruptShard("TruncatedShard", "stream ended inside a tar header")
        if header == b"\0" * BLOCK:
            return  # end-of-archive marker
        if not _checksum_ok(header):
            raise CorruptShard("CorruptShard", "tar header checksum mismatch")
        try:
            size = _number(header[124:136])
        except ValueError as exc:
            raise CorruptShard("CorruptShard", f"unreadable tar size field: {exc}") from None
        if size > MAX_MEMBER_BYTES:
            raise CorruptShard("CorruptShard", f"tar member claims {size} bytes")
        kind = header[156:157]
        name = long_name or _name(header)
        data = _read_exact(stream, size, f"member {name!r}")
        _read_exact(stream, -size % BLOCK, "tar padding")
        if kind == b"L":  # GNU long name for the next member
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind == b"x":  # pax extended header for the next member
            long_name = _pax_path(data) or long_name
        elif kind in (b"0", b"\0", b"7"):
            yield name, data
            long_name = None
        else:  # directories, links, global pax headers: nothing to read
            long_name = None


def split_name(name: str) -> tuple[str, str] | None:
    """'dir/abc.seg.mp4' -> ('dir/abc', 'seg.mp4'); None for names that are not sample members."""
    while name.startswith("./"):
        name = name[2:]
    folder, _, base = name.rpartition("/")
    if not base or base.startswith(".") or "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def iter_samples(stream: BinaryIO, url: str) -> Iterator[Sample]:
    """Group consecutive members by key into Samples. Raises CorruptShard at damage, after
    yielding the sample being assembled with the members that were read whole."""
    current: Sample | None = None
    members = iter_members(stream)
    while True:
        try:
            item = next(members, None)
        except CorruptShard:
            # the sample being assembled goes on with the members read whole (if its video was
            # the damaged member it becomes a NoVideoMember dead letter): nothing seen is lost
            if current is not None:
                yield current
            raise
        if item is None:
            break
        parts = split_name(item[0])
        if parts is None:
            continue
        key, ext = parts
        if current is not None and current.key != key:
            yield current
            current = None
        if current is None:
            current = Sample(key=key, source_url=url, members={})
        current.members[ext] = item[1]
    if current is not None:
        yield current


def video_member(sample: Sample) -> str | None:
    """The extension of the sample's video member (by the preference order above), or None."""
    by_last = {ext.rsplit(".", 1)[-1]: ext for ext in sample.members}
    for wanted in VIDEO_EXTENSIONS:
        if wanted in by_last:
            return by_last[wanted]
    return None
