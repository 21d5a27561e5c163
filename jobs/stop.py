"""Stopping a run cleanly on SIGTERM (Kubernetes, `ray job stop`) or SIGINT (Ctrl-C).

    stop = StopRequest()
    stop.install()          # again after ray.init: Ray's driver replaces the SIGTERM handler, and
                            # its native failure handler prints a stack dump on SIGTERM otherwise
    ... dispatcher checks stop.event: no new shards; in-flight ones get retries.stop_grace_s
    stop.exit_code          # 128 + signal number: 143 for SIGTERM, 130 for SIGINT

A second signal cuts the grace short. The handlers only set flags (no I/O, no exceptions), so
a signal can never leave a half-written file or a traceback behind; the driver's own code
does the stopping.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    def __init__(self) -> None:
        self.event = threading.Event()  # set: hand out no more shards
        self.hurry = threading.Event()  # set: skip what is left of the grace period
        self.signum: int | None = None
        self.reason = ""
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else 1

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def request(self, reason: str, signum: int | None = None) -> None:
        if self.event.is_set():
            self.hurry.set()
            return
        self.signum, self.reason = signum, reason
        self.event.set()

    def _handle(self, signum: int, _frame: Any) -> None:
        self.request(signal.Signals(signum).name, signum)
