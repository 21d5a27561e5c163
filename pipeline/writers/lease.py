"""One driver per output: the lease object `_lease.json` and its heartbeat.

    lease = OutputLease(location, timeout_s=60)
    lease.acquire()            # LeaseHeld if a live driver holds it; a dead one's is taken over
    lease.start_heartbeat()    # rewrites heartbeat_at every timeout_s / 4 (a daemon thread)
    ...                        # lease.lost is set if another driver took the output over
    lease.release()

Acquiring is a create-if-absent of the lease object; taking over a dead holder's lease is a
compare-and-swap against the version that was judged dead (`storage.replace_if`: `If-Match`
on S3, a rename-aside locally), so of two drivers starting at once exactly one wins. A holder
is dead when it is provably gone (same machine and pid namespace, and its pid no longer runs
the process that wrote the lease) or when its heartbeat is older than the timeout it wrote
(a lost node, another machine: nothing else can be known from outside). Heartbeat times are
compared across machines' clocks, so keep them synchronised (NTP) to well under the timeout.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pipeline.writers import storage
from pipeline.writers.location import OutputLocation
from schemas.manifest import LeaseFile

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0


class LeaseHeld(Exception):
    """Another driver, alive as far as can be told, holds the output's lease."""

    def __init__(self, location: OutputLocation, holder: LeaseFile, now: float | None = None):
        self.holder = holder
        ago = (now or time.time()) - holder.heartbeat_at
        job = f", Ray job {holder.ray_job_id}" if holder.ray_job_id else ""
        super().__init__(
            f"output {location.uri} is being written by another driver: pid {holder.pid} on {holder.host}"
            f"{job}, running since {_clock(holder.started_at)}, last heartbeat {ago:.0f} s ago. "
            f"Wait for it to finish (`tokenmill status {location.uri}`), stop it (SIGTERM to pid "
            f"{holder.pid} on {holder.host}, or `ray job stop`), or write to another output.uri. "
            f"A driver that died is taken over by the next run: at once on the same machine, "
            f"otherwise {holder.timeout_s:.0f} s after its last heartbeat."
        )


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_start(pid: int) -> str:
    """Start time of `pid` in clock ticks since boot ('' if unknown): a reused pid differs."""
    stat = _read_text(f"/proc/{pid}/stat")
    if not stat:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22, counted after the command name


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def this_process(timeout_s: float, run_id: str | None = None, now: float | None = None) -> LeaseFile:
    now = time.time() if now is None else now
    return LeaseFile(run_id=run_id or uuid.uuid4().hex[:12], host=socket.gethostname(), pid=os.getpid(),
                     pid_start=_pid_start(os.getpid()), boot_id=_read_text("/proc/sys/kernel/random/boot_id"),
                     pid_namespace=_pid_namespace(), started_at=now, heartbeat_at=now, timeout_s=timeout_s)


def provably_dead(holder: LeaseFile) -> bool:
    """True only when this machine can see the holder's pid namespace and its process is gone."""
    here = this_process(holder.timeout_s)
    if (holder.host, holder.boot_id, holder.pid_namespace) != (here.host, here.boot_id, here.pid_namespace):
        return False
    if not here.boot_id or not here.pid_namespace:
        return False  # no /proc: cannot tell
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    start = _pid_start(holder.pid)
    return bool(start and holder.pid_start and start != holder.pid_start)


def holder_state(holder: LeaseFile, now: float | None = None) -> str:
    """"live", "dead" (provably) or "stale" (no heartbeat within its timeout)."""
    now = time.time() if now is None else now
    if provably_dead(holder):
        return "dead"
    if now - holder.heartbeat_at > holder.timeout_s:
        return "stale"
    return "live"


def read_lease(where: OutputLocation | str, storage_options: dict[str, Any] | None = None,
               ) -> tuple[LeaseFile, str] | None:
    """(lease, version) of the output, or None when no driver holds it."""
    loc = OutputLocation.of(where, storage_options)
    got = storage.read_versioned(loc.fs, loc.path(loc.LEASE))
    if got is None:
        return None
    data, version = got
    try:
        return LeaseFile.from_dict(json.loads(data)), version
    except (ValueError, TypeError) as exc:
        # a torn or foreign object: treat it as a dead holder's (taken over by compare-and-swap)
        log.warning("unreadable lease %s (%s); treating it as stale", loc.path(loc.LEASE), exc)
        return LeaseFile("?", "?", 0, "", "", "", 0.0, 0.0, 0.0), version


class OutputLease:
    def __init__(self, location: OutputLocation, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.location = location
        self.path = location.path(location.LEASE)
        self.mine = this_process(timeout_s)
        self.version: str | None = None
        self.lost = threading.Event()
        self.on_lost: Callable[[], None] | None = None  # called (heartbeat thread) when lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # heartbeat thread vs. update/release

    def acquire(self, attempts: int = 5) -> None:
        """Take the lease, or raise LeaseHeld naming the live holder."""
        if self.location.is_local:
            os.makedirs(self.location.root, exist_ok=True)
        for _ in range(attempts):
            self.mine = replace(self.mine, heartbeat_at=time.time())
            self.version = storage.replace_if(self.location.fs, self.path, self.mine.to_json_bytes(), None)
            if self.version is not None:
                return
            current = read_lease(self.location)
            if current is None:
                continue  # released in between: try to create it again
            holder, version = current
            if holder.run_id == self.mine.run_id:  # our create landed; its answer was lost
                self.version = version
                return
            state = holder_state(holder)
            if state == "live":
                raise LeaseHeld(self.location, holder)
            log.warning("taking over the lease of %s: driver pid %d on %s is %s (last heartbeat %s)",
                        self.location.uri, holder.pid, holder.host,
                        "gone" if state == "dead" else f"silent for over {holder.timeout_s:.0f} s",
                        _clock(holder.heartbeat_at))
            self.mine = replace(self.mine, heartbeat_at=time.time())
            self.version = storage.replace_if(self.location.fs, self.path, self.mine.to_json_bytes(), version)
            if self.version is not None:
                return
        current = read_lease(self.location)
        raise LeaseHeld(self.location, current[0] if current else self.mine)

    def renew(self, **changes: Any) -> bool:
        """Rewrite the heartbeat (and `changes`, e.g. ray_job_id); False if the lease was lost."""
        with self._lock:
            if self.version is None or self.lost.is_set():
                return False
            mine = replace(self.mine, heartbeat_at=time.time(), **changes)
            new = storage.replace_if(self.location.fs, self.path, mine.to_json_bytes(), self.version)
            if new is None:
                current = read_lease(self.location)
                if current is not None and current[0].run_id == self.mine.run_id:
                    # our own earlier write landed but its answer was lost: adopt its version
                    self.version = current[1]
                    return True
                holder = current[0] if current else None
                log.error("lost the lease of %s to %s", self.location.uri,
                          f"pid {holder.pid} on {holder.host}" if holder else "nobody (it was removed)")
                self.lost.set()
                if self.on_lost is not None:
                    self.on_lost()
                return False
            self.mine, self.version = mine, new
            return True

    def start_heartbeat(self) -> None:
        interval = max(0.2, self.mine.timeout_s / 4)

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    if not self.renew():
                        return
                except Exception:  # noqa: BLE001 - a failed beat is retried at the next tick
                    log.warning("lease heartbeat of %s failed; retrying", self.location.uri, exc_info=True)

        self._thread = threading.Thread(target=beat, name="tokenmill-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            if self.version is None or self.lost.is_set():
                return
            try:
                storage.delete_if(self.location.fs, self.path, self.version)
            except Exception:  # noqa: BLE001 - a leftover lease is taken over by the next run
                log.warning("could not remove the lease of %s", self.location.uri, exc_info=True)
            self.version = None
