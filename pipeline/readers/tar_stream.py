"""Streaming WebDataset reader: a tar byte stream -> Samples, one at a time, in order.

A small tar parser of our own instead of `tarfile`: in stream mode `tarfile` ends iteration
silently at a bad checksum or a cut header after the first member, which would make a damaged
shard look complete. Here every header checksum is verified and every short read is reported as
`CorruptShard`, after the complete samples before the damage have been yielded.

WebDataset convention: a member `dir/abc.seg.mp4` belongs to sample key `dir/abc` with extension
`seg.mp4` (key = path up to the first '.' of the base name); a sample's members are consecutive.
Only one sample is held at a time, within `limits:` (schemas.jobspec.LimitSpec): a video member
over `spool_mb` is streamed to a temporary file (`Sample.files`), one that would take the
sample's video bytes over `max_video_mb`, or sidecars over `max_sidecar_mb`, is skipped unread
and the sample carries a `refusal` (it becomes a dead letter). A spooled file lives until the
next sample is read. Sample keys are `pipeline.records.safe_key` of the shard's key, with the
members' own names kept in `Sample.names`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator, Iterator
from typing import BinaryIO

from pipeline.records import Sample, safe_key
from schemas.jobspec import LimitSpec

BLOCK = 512
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi", "m4v", "mpg", "mpeg", "ts", "flv", "wmv",
                    "ogv", "3gp", "y4m")
# a header claiming more than this is damage, not data: it would make us buffer a bogus sample
MAX_MEMBER_BYTES = 64 * 1024**3
# a GNU long name or pax header is a few hundred bytes; one claiming more than this is damage
MAX_HEADER_DATA = 1 << 20
CHUNK = 16 * 1024 * 1024


class CorruptShard(Exception):
    """The tar stream itself is damaged (truncated, bad header). Samples before it were valid."""

    def __init__(self, error_type: str, message: str):
        self.error_type = error_type
        super().__init__(message)


def _chunks(stream: BinaryIO, size: int, what: str) -> Iterator[bytes]:
    left = size
    while left > 0:
        chunk = stream.read(min(left, CHUNK))
        if not chunk:
            raise CorruptShard("TruncatedShard", f"stream ended {left} bytes short inside {what}")
        left -= len(chunk)
        yield chunk


def _read_exact(stream: BinaryIO, size: int, what: str) -> bytes:
    return b"".join(_chunks(stream, size, what))


class TarMember:
    """One regular file of the stream, its data not yet read: take it once with `read` or
    `spool`, or leave it (iter_members then skips it unread, chunk by chunk)."""

    def __init__(self, stream: BinaryIO, name: str, size: int):
        self.name, self.size = name, size
        self._stream: BinaryIO | None = stream

    def _take(self) -> Iterator[bytes]:
        stream, self._stream = self._stream, None
        if stream is None:
            raise RuntimeError(f"tar member {self.name!r} was already read")
        return _chunks(stream, self.size, f"member {self.name!r}")

    def read(self) -> bytes:
        return b"".join(self._take())

    def spool(self, path: str) -> None:
        """Stream the data into a new file at `path` (removed again if the stream is cut)."""
        try:
            with open(path, "xb") as out:
                for chunk in self._take():
                    out.write(chunk)
        except BaseException:
            os.unlink(path)
            raise

    def skip(self) -> None:
        if self._stream is not None:
            for _ in self._take():
                pass


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


def _check_trailer(stream: BinaryIO) -> None:
    """Only zeros may follow the end-of-archive marker. Anything else means a damaged size field
    (checksum intact) sent the parser into a run of zeros inside the data: members after it
    would be lost without a word."""
    while chunk := stream.read(CHUNK):
        if chunk.count(0) != len(chunk):
            raise CorruptShard("CorruptShard", "data after the end-of-archive marker (a damaged size field?)")


def iter_members(stream: BinaryIO) -> Iterator[TarMember]:
    """Each regular file in a tar stream, in order. Raises CorruptShard on damage."""
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if len(header) == 0:
            return  # no end-of-archive blocks: tolerated, every member so far was complete
        if len(header) < BLOCK:
            raise CorruptShard("TruncatedShard", "stream ended inside a tar header")
        if header == b"\0" * BLOCK:
            _check_trailer(stream)  # end-of-archive marker
            return
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
        if kind in (b"L", b"x"):  # GNU long name / pax extended header for the next member
            if size > MAX_HEADER_DATA:
                raise CorruptShard("CorruptShard", f"a tar {kind.decode()} header claims {size} bytes")
            data = _read_exact(stream, size, "a long-name header")
            if kind == b"L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            else:
                long_name = _pax_path(data) or long_name
        else:
            member = TarMember(stream, name, size)
            if kind in (b"0", b"\0", b"7"):
                yield member
            member.skip()  # whatever the caller left unread; directories, links: nothing to read
            long_name = None
        _read_exact(stream, -size % BLOCK, "tar padding")


def split_name(name: str) -> tuple[str, str] | None:
    """'dir/abc.seg.mp4' -> ('dir/abc', 'seg.mp4'); None for names that are not sample members."""
    while name.startswith("./"):
        name = name[2:]
    folder, _, base = name.rpartition("/")
    if not base or base.startswith(".") or "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def iter_samples(stream: BinaryIO, url: str, limits: LimitSpec | None = None) -> Generator[Sample, None, None]:
    """Group consecutive members by key into Samples. Raises CorruptShard at damage, after
    yielding the sample being assembled with the members that were read whole (if its video
    was the damaged member it becomes a NoVideoMember dead letter): nothing seen is lost."""
    with tempfile.TemporaryDirectory(prefix="tokenmill-spool-") as spool:
        take = _Taker(limits or LimitSpec(), spool)
        current: Sample | None = None
        raw_key = ""
        members = iter_members(stream)
        while True:
            try:
                member = next(members, None)
            except CorruptShard:
                if current is not None:
                    yield current
                raise
            if member is None:
                break
            parts = split_name(member.name)
            if parts is None:
                continue
            if current is not None and parts[0] != raw_key:
                yield current
                take.release(current)
                current = None
            if current is None:
                raw_key = parts[0]
                current = Sample(key=safe_key(raw_key), source_url=url, members={})
            try:
                take(member, parts[1], current)
            except CorruptShard:
                if current.members or current.files or current.refusal:  # not one cut at its first member
                    yield current
                raise
        if current is not None:
            yield current


def is_video(ext: str) -> bool:
    return ext.rsplit(".", 1)[-1] in VIDEO_EXTENSIONS


class _Taker:
    """Reads, spools or refuses each member within the per-sample budgets of `limits`."""

    def __init__(self, limits: LimitSpec, spool: str):
        self.max_video, self.spool_above = limits.in_bytes("max_video_mb"), limits.in_bytes("spool_mb")
        self.max_sidecars = limits.in_bytes("max_sidecar_mb")
        self.spool, self.count = spool, 0
        self.sample: Sample | None = None
        self.video = self.sidecars = 0  # bytes the current sample holds so far

    def __call__(self, member: TarMember, ext: str, sample: Sample) -> None:
        if sample is not self.sample:
            self.sample, self.video, self.sidecars = sample, 0, 0
        sample.names.setdefault(ext, member.name)
        if is_video(ext):
            self.video += member.size
            if self.video > self.max_video:
                return _refuse(sample, "MemberTooLarge", f"video member {ascii(member.name)[:200]} takes the sample's "
                               f"video to {self.video} bytes, over limits.max_video_mb ({self.max_video} bytes)")
            if member.size > self.spool_above:
                self.count += 1
                path = os.path.join(self.spool, f"member-{self.count}")
                member.spool(path)
                if ext in sample.files:  # the same extension twice: the later member stands
                    os.unlink(sample.files[ext])
                sample.files[ext] = path
                sample.members.pop(ext, None)
                return
        else:
            self.sidecars += max(member.size, BLOCK)
            if self.sidecars > self.max_sidecars:
                return _refuse(sample, "SidecarTooLarge", f"sidecar {ascii(member.name)[:200]} takes the sample's "
                               f"other members over limits.max_sidecar_mb ({self.max_sidecars} bytes)")
        sample.members[ext] = member.read()
        if ext in sample.files:
            os.unlink(sample.files.pop(ext))

    @staticmethod
    def release(sample: Sample) -> None:
        for path in sample.files.values():
            os.unlink(path)
        sample.files.clear()


def _refuse(sample: Sample, error_type: str, message: str) -> None:
    if sample.refusal is None:  # the first limit crossed is the reason
        sample.refusal = (error_type, message)


def video_member(sample: Sample) -> str | None:
    """The extension of the sample's video member (by the preference order above), or None."""
    by_last = {ext.rsplit(".", 1)[-1]: ext for ext in [*sample.members, *sample.files]}
    for wanted in VIDEO_EXTENSIONS:
        if wanted in by_last:
            return by_last[wanted]
    return None
