"""Crash isolation for native decoders: decode in a child process that may die alone.

decord and FFmpeg are C/C++; a bad file can segfault them, and in a job the process doing the
decoding is a Ray worker that also talks to the tokenizer actors. `DecodeWorker` keeps one
child process (`python -m pipeline.readers.isolation`, a fresh interpreter: no fork of a threaded Ray
worker) for a whole shard and sends it one video at a time (a small header, then the bytes
unpickled, or the path of the file a large member was spooled to); clips stream back over a pipe as
they are cut. A child that dies (signal, abort, OOM kill), stops answering or runs out of memory is a
transient fault (pipeline.faults): the sample is decoded again in a fresh child, skipping the
clips already delivered. Only if that fails the same way does the sample become a
VideoError("decode", "DecoderCrashed" | "DecoderTimeout" | "DecoderOutOfMemory"); the next
sample starts a new child either way.

Test hooks: when the environment variable named by CRASH_ENV (HANG_ENV) equals a sample's key,
the child kills itself with SIGSEGV (sleeps for an hour) before decoding it, every time. With
FAULT_ONCE_ENV = "<key>:<kill|memory>:<flag file>", the first child to meet that sample (the
flag file does not exist yet; it creates it) SIGKILLs itself or hits a real MemoryError. They
exist only to test the above with real faults; sample data cannot set a process's environment.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import faults
from pipeline.readers.clips import DecodedClip, Grid, VideoDone, cut_clips
from pipeline.readers.decode import Media, VideoError
from schemas.jobspec import ClipSpec, LimitSpec

log = logging.getLogger(__name__)

CRASH_ENV = "TOKENMILL_TEST_DECODER_CRASH_KEY"
HANG_ENV = "TOKENMILL_TEST_DECODER_HANG_KEY"
FAULT_ONCE_ENV = "TOKENMILL_TEST_DECODER_FAULT_ONCE"
# a sample whose child failed transiently is decoded again this many times in a fresh child
SAMPLE_RETRIES = 1
# seconds the parent waits for the next message from the child before declaring it hung
# (limits.decode_timeout_s); a single 17-frame clip of 8K video decodes in well under this on one core
DEFAULT_TIMEOUT_S = LimitSpec().decode_timeout_s
STARTUP_TIMEOUT_S = 120.0  # a decoder child that is not up by then is treated as crashed
SOCKET_BUFFER = 4 * 1024 * 1024
_REPO = str(Path(__file__).resolve().parents[1])


class DecodeWorker:
    """One decoding child process, restarted on demand. Use as a context manager."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.restarts = 0
        self.retried_samples = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None  # parent <-> child, duplex over a socketpair

    def __enter__(self) -> DecodeWorker:
        self._start()  # the child's imports (~0.2 s) overlap with reading the first sample
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> Connection:
        import socket

        parent_sock, child_sock = socket.socketpair()
        for sock in (parent_sock, child_sock):  # room for a whole clip: fewer wake-ups per clip
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.readers.isolation", str(child_sock.fileno())],
            pass_fds=(child_sock.fileno(),), env=env, stdin=subprocess.DEVNULL,
        )
        child_sock.close()
        conn = Connection(parent_sock.detach())
        # the decode timeout is for decoding: a child's start (interpreter, numpy, PyAV, pydantic
        # imports) can take seconds on a loaded node, so it says when it is ready
        try:
            ready = conn.poll(STARTUP_TIMEOUT_S) and conn.recv() == ("ready", None)
        except (EOFError, OSError):
            ready = False
        if not ready:
            conn.close()
            raise VideoError("decode", "DecoderCrashed", f"decoder process did not start ({self._kill()})")
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def _kill(self) -> str:
        """Stop a dead or hung child; returns how it ended, for the dead letter's message."""
        proc, self._proc = self._proc, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if proc is None:
            return "not running"
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        self.restarts += 1
        if code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def cut_clips(self, key: str, data: Media, spec: ClipSpec, limits: LimitSpec | None = None,
                  grid: Grid | None = None) -> Iterator[DecodedClip | VideoDone]:
        """Like clips.cut_clips, in the child. Raises VideoError, including for a child that
        crashed (or hung, or ran out of memory) on this sample again in a fresh process."""
        delivered = 0  # clips (or row chunks) already yielded
        for attempt in range(SAMPLE_RETRIES + 1):
            try:
                seen = 0
                for item in self._cut_once(key, data, spec, limits, grid):
                    if isinstance(item, DecodedClip):
                        seen += 1
                        if seen <= delivered:
                            continue  # yielded before the child failed: decoding is deterministic
                        delivered = seen
                    yield item
                return
            except VideoError as exc:
                if not faults.sample_error_is_transient(exc.error_type):
                    raise
                if attempt == SAMPLE_RETRIES:
                    raise VideoError(exc.stage, exc.error_type,
                                     f"{exc} (the same again in a fresh decoder process)") from None
                self.retried_samples += 1
                log.warning("sample %s: %s; decoding it again in a fresh decoder process", key, exc)

    def _cut_once(self, key: str, data: Media, spec: ClipSpec, limits: LimitSpec | None,
                  grid: Grid | None) -> Iterator[DecodedClip | VideoDone]:
        conn = self._conn or self._start()
        try:
            path = data if isinstance(data, str) else None
            conn.send((key, path, spec, limits or LimitSpec(), grid or Grid()))
            if not isinstance(data, str):
                conn.send_bytes(data)  # no pickled copy of the video on either side
        except OSError:
            raise VideoError("decode", "DecoderCrashed", f"decoder process {self._kill()}") from None
        finished = False
        try:
            while not finished:
                kind, payload = self._receive(conn)
                finished = kind in ("done", "error")
                if kind == "error":
                    raise VideoError(*payload)
                yield payload
        finally:
            if not finished and self._proc is not None:
                self._kill()  # the caller stopped early: the child is mid-video, start afresh

    def _receive(self, conn: Connection) -> tuple[str, Any]:
        try:
            ready = conn.poll(self.timeout_s)
            message = conn.recv() if ready else None
        except (EOFError, OSError):
            raise VideoError("decode", "DecoderCrashed", f"decoder process {self._kill()}") from None
        if message is None:
            how = self._kill()
            raise VideoError("decode", "DecoderTimeout", f"no answer in {self.timeout_s:.0f} s ({how})")
        kind, payload = message
        if kind == "clip":  # header then raw pixels: no pickling of the frames on either side
            header, shape = payload
            frames = np.empty(shape, np.uint8)
            try:
                conn.recv_bytes_into(frames.reshape(-1))  # a 1-D view: multiprocessing sizes by len()
            except (EOFError, OSError):
                raise VideoError("decode", "DecoderCrashed", f"decoder process {self._kill()}") from None
            payload = DecodedClip(**header, frames=frames)
        return kind, payload


def _serve(conn: Connection) -> None:
    """Child loop: one request (key, path or None, spec, limits) at a time, the bytes after it
    when the path is None, until the parent sends None."""
    conn.send(("ready", None))
    while True:
        request: Any = conn.recv()
        if request is None:
            return
        key, path, spec, limits, grid = request
        data: Media = conn.recv_bytes() if path is None else path
        if os.environ.get(CRASH_ENV) == key:
            os.kill(os.getpid(), signal.SIGSEGV)
        if os.environ.get(HANG_ENV) == key:
            time.sleep(3600)
        try:
            _fault_once(key)
            for item in cut_clips(data, spec, limits, grid):
                if isinstance(item, VideoDone):
                    conn.send(("done", item))
                else:
                    header = {f.name: getattr(item, f.name) for f in fields(item) if f.name != "frames"}
                    conn.send(("clip", (header, item.frames.shape)))
                    conn.send_bytes(np.ascontiguousarray(item.frames).reshape(-1).data)  # 1-D: len() = bytes
        except VideoError as exc:
            conn.send(("error", (exc.stage, exc.error_type, str(exc))))
        except MemoryError as exc:  # transient: the retry runs in a fresh child with its memory back
            conn.send(("error", ("decode", "DecoderOutOfMemory", f"MemoryError in the decoder process: {exc}")))
        except Exception as exc:  # a decoder bug on one file must not end the shard
            conn.send(("error", ("decode", "DecodeError", f"{type(exc).__name__}: {exc}")))


def _fault_once(key: str) -> None:
    """FAULT_ONCE_ENV test hook (see the module doc): a real SIGKILL or MemoryError, once."""
    want, _, rest = os.environ.get(FAULT_ONCE_ENV, "").partition(":")
    kind, _, flag = rest.partition(":")
    if not flag or want != key:
        return
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return  # already done once
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "memory":
        bytearray(1 << 60)  # no machine has an exabyte: the allocator raises MemoryError


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
