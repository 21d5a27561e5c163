"""Where shards come from: expanding `input.shards` into URLs, and opening one URL as a stream.

Accepted forms (a string or a list of them, each expanded, then the union sorted):
    data/shards-000001.tar              a path or URL (s3://, gs://, http(s)://, file://)
    data/shards-{000000..000099}.tar    brace ranges (zero padding kept) and {a,b} alternatives
    data/*.tar, s3://bucket/x/*.tar     globs, listed through fsspec for remote filesystems
    shards.txt                          a text file of URLs/paths, one per line ('#' comments);
                                        relative lines resolve against the list file's folder

Opening is streaming: a shard is read in bounded blocks, never loaded whole into memory.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, BinaryIO, cast

from schemas.config import SpecError

LIST_SUFFIXES = (".txt", ".lst", ".urls")
# read-ahead block for remote files: large enough to amortise requests, small enough that many
# concurrent shard readers stay bounded in memory
REMOTE_BLOCK_SIZE = 8 * 1024 * 1024
_GLOB_CHARS = re.compile(r"[*?\[]")


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


def _expand_one(item: str, storage_options: dict[str, Any], depth: int) -> list[str]:
    urls: list[str] = []
    for pattern in expand_braces(item.strip()):
        if pattern.lower().endswith(LIST_SUFFIXES):
            if depth > 3:
                raise SpecError("input.shards", f"shard list files nest too deeply at {pattern!r}")
            for entry in _read_list(pattern, storage_options):
                urls.extend(_expand_one(entry, storage_options, depth + 1))
        elif _GLOB_CHARS.search(pattern):
            found = _glob(pattern, storage_options)
            if not found:
                raise SpecError("input.shards", f"no file matches {pattern!r}")
            urls.extend(found)
        else:
            urls.append(pattern)
    return urls


def expand_shards(shards: str | list[str], storage_options: dict | None = None) -> list[str]:
    """Sorted, de-duplicated shard URLs. Raises SpecError (field input.shards) when nothing matches
    or a local path does not exist; remote literal URLs are not probed (that is one request each)."""
    items = [shards] if isinstance(shards, str) else list(shards)
    opts = dict(storage_options or {})
    urls = sorted({u for item in items for u in _expand_one(item, opts, 0)})
    if not urls:
        raise SpecError("input.shards", f"no shard matches {shards!r}")
    missing = [u for u in urls if _is_local(u) and not os.path.isfile(_local_path(u))]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise SpecError("input.shards", f"no such shard file: {', '.join(missing[:3])}{more}")
    return urls


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
