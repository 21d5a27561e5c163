"""Where shards come from: expanding `input.shards` into URLs, and opening one URL as a stream.

Accepted forms (a string or a list of them, each expanded, then the union sorted):
    data/shards-000001.tar              a path or URL (s3://, gs://, http(s)://, file://)
    data/shards-{000000..000099}.tar    brace ranges (zero padding kept) and {a,b} alternatives
    data/*.tar, s3://bucket/x/*.tar     globs, listed through fsspec for remote filesystems
    shards.txt                          a text file of URLs/paths, one per line ('#' comments);
                                        relative lines resolve against the list file's folder

Identity (`resolve_shards`): a shard is named by its path relative to the root of the pattern
that matched it (the pattern's prefix before any brace or glob character, up to the last '/';
a plain path's folder) plus its size, so moving or remounting the input root keeps its shard id.

Opening is streaming: a shard is read in bounded blocks, never loaded whole into memory.
"""

from __future__ import annotations

import glob
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from pipeline.records import shard_id
from schemas.config import SpecError

LIST_SUFFIXES = (".txt", ".lst", ".urls")
# read-ahead block for remote files: large enough to amortise requests, small enough that many
# concurrent shard readers stay bounded in memory
REMOTE_BLOCK_SIZE = 8 * 1024 * 1024
_GLOB_CHARS = re.compile(r"[*?\[]")
_PATTERN_CHARS = re.compile(r"[*?\[{]")
# protocols whose folders can be listed for sizes (an http server cannot be asked)
_UNLISTABLE = ("http", "https")


@dataclass(frozen=True)
class InputShard:
    """One input shard: where it is read from now, and the name and size that identify it."""

    url: str
    name: str  # path relative to the root of the pattern that matched it, e.g. "a/x.tar"
    size: int | None  # bytes; None where the store does not list sizes (http)

    @property
    def id(self) -> str:
        return shard_id(self.name, self.size)


def pattern_root(pattern: str) -> str:
    """The folder a pattern's names are relative to: `data/shards-{0..3}.tar` -> `data/`,
    `s3://b/v/*/x.tar` -> `s3://b/v/`, a plain path -> its folder ("" for a bare file name)."""
    match = _PATTERN_CHARS.search(pattern)
    cut = match.start() if match else len(pattern)
    return pattern[: pattern.rfind("/", 0, cut) + 1]


class ShardReadError(OSError):
    """A storage client's own failure (e.g. botocore's EndpointConnectionError, which is not an
    OSError) while reading a shard, re-raised as an OSError: callers retry every OSError."""


def expand_braces(pattern: str) -> list[str]:
    """`a{01..03}b` -> [a01b, a02b, a03b]; `{x,y}` -> alternatives; a literal `{x}` stays as written.
    braceexpand is what webdataset itself uses, so a pattern means the same here as there."""
    from braceexpand import braceexpand

    return list(braceexpand(pattern, escape=False))


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def _is_local(url: str) -> bool:
    return _protocol(url) == "file"


def _local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def _glob(pattern: str, storage_options: dict[str, Any]) -> list[str]:
    if _is_local(pattern):
        return [p for p in glob.glob(_local_path(pattern)) if os.path.isfile(p)]
    import fsspec

    fs, _, _ = fsspec.get_fs_token_paths(pattern, storage_options=storage_options)
    proto = _protocol(pattern)
    return [p if "://" in p else f"{proto}://{p}" for p in fs.glob(pattern)]


def _read_list(url: str, storage_options: dict[str, Any]) -> list[str]:
    with open_url(url, storage_options) as f:
        lines = [ln.strip() for ln in f.read().decode("utf-8").splitlines()]
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    out = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if "://" in line or os.path.isabs(line):
            out.append(line)
        else:
            out.append(f"{base}/{line}")
    return out


def _expand_one(item: str, storage_options: dict[str, Any], depth: int) -> list[tuple[str, str]]:
    """(url, root of the pattern that matched it) for every shard `item` names."""
    item = item.strip()
    root = pattern_root(item)
    found: list[tuple[str, str]] = []
    for pattern in expand_braces(item):
        if pattern.lower().endswith(LIST_SUFFIXES):
            if depth > 3:
                raise SpecError("input.shards", f"shard list files nest too deeply at {pattern!r}")
            for entry in _read_list(pattern, storage_options):
                found.extend(_expand_one(entry, storage_options, depth + 1))
        elif _GLOB_CHARS.search(pattern):
            matches = _glob(pattern, storage_options)
            if not matches:
                raise SpecError("input.shards", f"no file matches {pattern!r}")
            found.extend((url, root) for url in matches)
        else:
            found.append((pattern, root))
    return found


def _expand(shards: str | list[str], storage_options: dict | None) -> dict[str, str]:
    """url -> root, sorted by url; a url matched twice keeps the shortest root (the longest name)."""
    items = [shards] if isinstance(shards, str) else list(shards)
    opts = dict(storage_options or {})
    roots: dict[str, str] = {}
    for item in items:
        for url, root in _expand_one(item, opts, 0):
            if url not in roots or len(root) < len(roots[url]):
                roots[url] = root
    if not roots:
        raise SpecError("input.shards", f"no shard matches {shards!r}")
    missing = [u for u in roots if _is_local(u) and not os.path.isfile(_local_path(u))]
    if missing:
        missing.sort()
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise SpecError("input.shards", f"no such shard file: {', '.join(missing[:3])}{more}")
    return dict(sorted(roots.items()))


def expand_shards(shards: str | list[str], storage_options: dict | None = None) -> list[str]:
    """Sorted, de-duplicated shard URLs. Raises SpecError (field input.shards) when nothing matches
    or a local path does not exist; remote literal URLs are not probed (that is one request each)."""
    return list(_expand(shards, storage_options))


def resolve_shards(shards: str | list[str], storage_options: dict | None = None) -> list[InputShard]:
    """The shards of `input.shards` with their names and sizes (see the module doc), sorted by url.

    Sizes come from a stat locally and from one listing per folder on an object store (never a
    request per shard); a remote shard that is not listed keeps size None and fails when read.
    Two shards that would share an id (same name under their roots, same size) are a SpecError.
    """
    roots = _expand(shards, storage_options)
    sizes = _sizes(list(roots), dict(storage_options or {}))
    resolved = [InputShard(url, _relative(url, root), sizes.get(url)) for url, root in roots.items()]
    seen: dict[str, InputShard] = {}
    for shard in resolved:
        other = seen.setdefault(shard.id, shard)
        if other is not shard:
            raise SpecError("input.shards", f"{other.url} and {shard.url} would share shard id {shard.id}: "
                                            f"both are {shard.name!r} under their pattern's folder, with the same size; "
                                            "name them through one pattern over a common folder (e.g. 'data/*/x.tar')")
    return resolved


def _relative(url: str, root: str) -> str:
    if root and url.startswith(root):
        return url[len(root):]
    if _is_local(url) and _is_local(root):  # "./data/" vs "data/x.tar": compare normalised paths
        rel = os.path.relpath(_local_path(url), _local_path(root) or ".")
        if not rel.startswith(".."):
            return rel.replace(os.sep, "/")
    return url.rsplit("/", 1)[-1]


def _sizes(urls: list[str], storage_options: dict[str, Any]) -> dict[str, int]:
    """Bytes of each shard that its store lists: a stat locally, one listing per remote folder."""
    sizes = {u: os.path.getsize(_local_path(u)) for u in urls if _is_local(u)}
    folders: dict[str, list[str]] = {}
    for url in urls:
        if not _is_local(url) and _protocol(url) not in _UNLISTABLE:
            folders.setdefault(url.rsplit("/", 1)[0], []).append(url)
    if folders:
        import fsspec

        def listing(folder: str) -> dict[str, int]:
            fs, path = fsspec.core.url_to_fs(folder, **storage_options)
            try:
                entries = fs.ls(path, detail=True)
            except FileNotFoundError:
                return {}
            return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e["size"]) for e in entries
                    if e.get("type") == "file" and e.get("size") is not None}

        with ThreadPoolExecutor(max_workers=8) as pool:
            listed = dict(zip(folders, pool.map(listing, folders), strict=True))
        for folder, members in folders.items():
            for url in members:
                size = listed[folder].get(url.rsplit("/", 1)[-1])
                if size is not None:
                    sizes[url] = size
    return sizes


def open_url(url: str, storage_options: dict | None = None) -> BinaryIO:
    """Open a shard for streaming reads. `.gz` shards are decompressed on the fly.

    Errors are the filesystem's own (FileNotFoundError, PermissionError, other OSErrors): they
    are infrastructure failures for the caller to retry or report, not data errors.
    """
    if _is_local(url) and not url.endswith(".gz"):
        return open(_local_path(url), "rb")  # noqa: SIM115 - the caller closes it
    import fsspec

    opts = dict(storage_options or {})
    if url.endswith(".gz"):
        return cast(BinaryIO, fsspec.open(url, mode="rb", compression="gzip", **opts).open())
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return cast(BinaryIO, fs.open(path, "rb", block_size=REMOTE_BLOCK_SIZE, cache_type="readahead"))
