"""fsspec helpers for the output location: one code path for local disk and object stores.

Publication primitives and why they are atomic:
- `publish_file`: local disk renames (atomic within a filesystem); an object store gets one
  upload of the finished local file (an S3 object becomes visible only when its PUT or
  multipart upload completes, so a killed upload leaves nothing under the final name).
- `put_bytes(..., exclusive=True)`: create-if-absent. Local: write a temp then `os.link`
  (fails if the name exists). S3: `PutObject` with `If-None-Match: *`.
- `replace_if(..., version)`: compare-and-swap of a small object (the lease). S3: `PutObject`
  with `If-Match: <ETag>`. Local: move the old object aside with one `rename` (only one
  racer's rename finds it), check it is the version expected, then create-if-absent.
Listings bypass fsspec's listing cache: other processes write here concurrently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from schemas.config import SpecError

_CHUNK = 8 << 20


def get_fs(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(filesystem, root path without protocol) for a local path or URL."""
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, root.rstrip("/")


def is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


def join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def unique_suffix() -> str:
    return uuid.uuid4().hex[:12]


def file_checksum(local_path: str) -> str:
    """"sha256:<hex>" of a local file."""
    return file_digests(local_path)[0]


def file_digests(local_path: str) -> tuple[str, str]:
    """("sha256:<hex>", md5 hex) of a local file, in one pass. The MD5 is what S3 lists as the
    ETag of an object uploaded in one PUT, so a listing can check a file's content for free."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(local_path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return f"sha256:{sha.hexdigest()}", md5.hexdigest()


@dataclass(frozen=True)
class Listed:
    size: int
    md5: str | None  # the listing's ETag when it is a plain MD5 (a simple PUT), else None


_MD5 = re.compile(r"^[0-9a-f]{32}$")


def list_files(fs: Any, directory: str) -> dict[str, Listed]:
    """Base name -> size (and MD5 where the listing gives one) of the files in `directory`.

    One paginated listing on S3; a multipart upload's ETag ("...-N") is not an MD5 and is
    dropped. Missing directory -> {}. Names starting with "_" or "." are skipped.
    """
    if is_local(fs):
        return {name: Listed(size, None) for name, size in _list_local(directory).items()}
    out = {}
    for name, entry in _remote_files(fs, directory):
        etag = str(entry.get("ETag") or "").strip('"').lower()
        out[name] = Listed(int(entry.get("size") or 0), etag if _MD5.match(etag) else None)
    return out


def list_sizes(fs: Any, directory: str) -> dict[str, int]:
    """Base name -> size of the files directly in `directory` (one paginated listing on S3)."""
    return {name: f.size for name, f in list_files(fs, directory).items()}


def _remote_files(fs: Any, directory: str) -> list[tuple[str, dict[str, Any]]]:
    """(base name, listing entry) of the files directly in a remote `directory`, fresh from one
    listing; names starting with "_" or "." are skipped, a missing directory is empty."""
    fs.invalidate_cache(directory)
    try:
        entries = fs.ls(directory, detail=True)
    except FileNotFoundError:
        return []
    files = []
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") == "file" and not name.startswith(("_", ".")):
            files.append((name, entry))
    return files


def list_versions(fs: Any, directory: str) -> dict[str, str]:
    """Base name -> "size:stamp" of the files directly in `directory` (one listing).

    The stamp changes whenever an object is rewritten, even to the same size: the ETag on S3
    (content hash of a simple PUT), inode + mtime on local disk (a rename/link swaps the inode).
    """
    if is_local(fs):
        try:
            with os.scandir(directory) as it:
                return {
                    e.name: f"{st.st_size}:{st.st_ino}:{st.st_mtime_ns}"
                    for e in it
                    if e.is_file() and not e.name.startswith(("_", ".")) and (st := e.stat())
                }
        except FileNotFoundError:
            return {}
    out = {}
    for name, entry in _remote_files(fs, directory):
        stamp = entry.get("ETag") or entry.get("LastModified") or ""
        out[name] = f"{int(entry.get('size') or 0)}:{str(stamp).strip(chr(34))}"
    return out


def _list_local(directory: str) -> dict[str, int]:
    try:
        with os.scandir(directory) as it:
            return {
                e.name: e.stat().st_size
                for e in it
                if e.is_file() and not e.name.startswith(("_", "."))
            }
    except FileNotFoundError:
        return {}


def exists(fs: Any, path: str) -> bool:
    if not is_local(fs):
        fs.invalidate_cache(path.rsplit("/", 1)[0])
    return bool(fs.exists(path))


def publish_file(fs: Any, local_path: str, final_path: str) -> None:
    """Move a finished local file to its final name in one atomic step (see module doc)."""
    if is_local(fs):
        os.makedirs(os.path.dirname(final_path), exist_ok=True)
        os.replace(local_path, final_path)
        return
    fs.put_file(local_path, final_path)
    fs.invalidate_cache(final_path.rsplit("/", 1)[0])
    os.remove(local_path)


def put_bytes(fs: Any, path: str, data: bytes, exclusive: bool = False) -> bool:
    """Write a small object whole. With `exclusive`, returns False if `path` already exists."""
    if is_local(fs):
        return _put_local(path, data, exclusive)
    try:
        fs.pipe_file(path, data, mode="create" if exclusive else "overwrite")
    except (FileExistsError, OSError) as exc:
        if exclusive and _is_precondition_failure(exc):
            return False
        raise
    finally:
        fs.invalidate_cache(path.rsplit("/", 1)[0])
    return True


def read_versioned(fs: Any, path: str) -> tuple[bytes, str] | None:
    """(content, version) of a small object, None if absent. The version is what `replace_if`
    compares: the ETag on S3, the content itself locally."""
    if is_local(fs):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()
    bucket, key, _ = fs.split_path(path)
    try:
        got = fs.call_s3("get_object", Bucket=bucket, Key=key)
    except FileNotFoundError:
        return None
    body = got["Body"]
    data = _read_body(fs, body)
    return data, str(got.get("ETag", "")).strip('"')


def _read_body(fs: Any, body: Any) -> bytes:
    import asyncio

    from fsspec.asyn import sync

    async def read() -> bytes:
        try:
            return bytes(await body.read())
        finally:
            body.close()

    if asyncio.iscoroutinefunction(getattr(body, "read", None)):
        return sync(fs.loop, read)
    return bytes(body.read())


def replace_if(fs: Any, path: str, data: bytes, version: str | None) -> str | None:
    """Write `path` only if it is still at `version` (None: only if absent). Returns the new
    version, or None when another writer got there first (nothing written)."""
    if is_local(fs):
        if version is not None:
            return _replace_local_if(path, data, version)
        if not _put_local(path, data, exclusive=True):
            return None
        return hashlib.sha256(data).hexdigest()
    condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": f'"{version}"'}
    put = _s3_if(fs, "put_object", path, Body=data, **condition)
    return None if put is None else str(put.get("ETag", "")).strip('"')


def _s3_if(fs: Any, operation: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
    """A conditional S3 call on `path`: its response, or None when the condition failed (412)
    or the object is gone."""
    bucket, key, _ = fs.split_path(path)
    try:
        return dict(fs.call_s3(operation, Bucket=bucket, Key=key, **kwargs))
    except (FileExistsError, OSError) as exc:
        if _is_precondition_failure(exc) or isinstance(exc, FileNotFoundError):
            return None
        raise
    finally:
        fs.invalidate_cache(path.rsplit("/", 1)[0])


def _replace_local_if(path: str, data: bytes, version: str) -> str | None:
    aside = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{unique_suffix()}.old"
    try:
        os.rename(path, aside)  # atomic: of several racers exactly one moves the object
    except FileNotFoundError:
        return None
    with open(aside, "rb") as f:
        old = f.read()
    if hashlib.sha256(old).hexdigest() != version:
        # it changed after the caller read it: put it back (unless someone created one since)
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        os.remove(aside)
        return None
    os.remove(aside)
    if not _put_local(path, data, exclusive=True):
        return None
    return hashlib.sha256(data).hexdigest()


def delete_if(fs: Any, path: str, version: str) -> bool:
    """Remove `path` if it is still at `version`; False if it changed or is gone."""
    if is_local(fs):
        got = read_versioned(fs, path)
        if got is None or got[1] != version:
            return False
        os.remove(path)
        return True
    return _s3_if(fs, "delete_object", path, IfMatch=f'"{version}"') is not None


def _is_precondition_failure(exc: BaseException) -> bool:
    if isinstance(exc, FileExistsError):
        return True
    text = f"{exc} {exc.__cause__ or ''}"
    return "PreconditionFailed" in text or "412" in text


def _put_local(path: str, data: bytes, exclusive: bool) -> bool:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{unique_suffix()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if `path` exists: create-if-absent, atomically
        except FileExistsError:
            return False
        return True
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_bytes(fs: Any, path: str) -> bytes:
    return bytes(fs.cat_file(path))


def read_many(fs: Any, paths: list[str]) -> dict[str, bytes]:
    """Fetch many small objects; concurrent on object stores (fsspec batches the GETs)."""
    if not paths:
        return {}
    if is_local(fs):
        out = {}
        for p in paths:
            with open(p, "rb") as f:
                out[p] = f.read()
        return out
    got = fs.cat(paths, on_error="omit")
    return {_strip(fs, k): v for k, v in got.items()}


def _strip(fs: Any, path: str) -> str:
    return str(fs._strip_protocol(path)).rstrip("/")


def remove_tree(fs: Any, path: str) -> int:
    """Remove a directory (prefix) and everything under it; returns how many files went."""
    if not is_local(fs):
        fs.invalidate_cache(path)
    try:
        files = fs.find(path)
    except FileNotFoundError:
        return 0
    if files:
        fs.rm(files)
    if is_local(fs) and os.path.isdir(path):
        fs.rm(path, recursive=True)
    return len(files)


def remove_files(fs: Any, paths: list[str]) -> None:
    """Remove files; ones already gone are not an error (another cleanup may have been first)."""
    if not paths:
        return
    if is_local(fs):
        for path in paths:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        return
    try:
        fs.rm(paths)
    except FileNotFoundError:  # s3fs expands the paths first and refuses missing ones
        for path in paths:
            try:
                fs.rm_file(path)
            except FileNotFoundError:
                pass
    fs.invalidate_cache(paths[0].rsplit("/", 1)[0])


def parse_storage_options(pairs: list[str]) -> dict[str, Any]:
    """`K=V` flags -> fsspec options. Values are JSON where they parse (numbers, true), else text;
    dotted keys nest (`client_kwargs.region_name=eu-west-1`)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SpecError("--storage-option", f"expected KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = options
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return options
