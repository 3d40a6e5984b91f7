"""`spectra serve`'s embedded worker, kept alive: restarted with backoff when it dies, its state in /readyz.

In production compose's restart policy does this for the worker containers. Embedded, the worker is a
child of `serve`: if it is SIGKILLed (or OOM-killed) mid-job, the sweeper re-queues the job, but without
a worker nothing would ever run it again. The supervisor polls the process; once it has exited, it kills
what is left of its process group (a pool child still running the job would otherwise keep going beside
its replacement), waits 1, 2, 4 ... up to 60 s (back to 1 s after a minute of healthy running), and
starts a new one.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
STABLE_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class WorkerState:
    running: bool
    detail: str


class WorkerSupervisor:
    def __init__(self, start: Callable[[], subprocess.Popen[bytes]],
                 stop: Callable[[subprocess.Popen[bytes]], None], *, poll_seconds: float = 0.5,
                 backoff: tuple[float, ...] = BACKOFF_SECONDS, stable_after: float = STABLE_AFTER_SECONDS) -> None:
        self._start, self._stop_process = start, stop
        self._poll, self._backoff, self._stable_after = poll_seconds, backoff, stable_after
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._failures = 0  # consecutive short-lived runs: picks the backoff step
        self._started_at = 0.0
        self._next_start: float | None = None
        self._last_exit: int | None = None

    def start(self) -> None:
        self._launch()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            process = self.process
        if process is not None:
            self._stop_process(process)

    def state(self) -> WorkerState:
        with self._lock:
            process, next_start = self.process, self._next_start
            restarts, last_exit = self.restarts, self._last_exit
        suffix = f", restarted {restarts} times (last exit status {last_exit})" if restarts else ""
        if process is not None and process.poll() is None:
            return WorkerState(True, f"local worker running (pid {process.pid}){suffix}")
        if next_start is not None:
            wait = max(0.0, next_start - time.monotonic())
            return WorkerState(False, f"local worker exited with status {last_exit}; restarting in {wait:.0f} s"
                               f"{suffix}")
        return WorkerState(False, "local worker is not running")

    def _launch(self) -> None:
        process = self._start()
        with self._lock:
            self.process, self._started_at, self._next_start = process, time.monotonic(), None
        log.info("local worker started (pid %d)", process.pid)

    def _watch(self) -> None:
        while not self._stopping.wait(self._poll):
            with self._lock:
                process = self.process
            if process is None or process.poll() is None:
                continue
            self._reap(process)
            ran = time.monotonic() - self._started_at
            self._failures = 0 if ran >= self._stable_after else self._failures + 1
            delay = self._backoff[min(max(self._failures - 1, 0), len(self._backoff) - 1)]
            with self._lock:
                self._last_exit, self._next_start = process.returncode, time.monotonic() + delay
            log.warning("local worker (pid %d) exited with status %s after %.0f s; restarting in %.0f s",
                        process.pid, process.returncode, ran, delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                self.restarts += 1
            self._launch()

    @staticmethod
    def _reap(process: subprocess.Popen[bytes]) -> None:
        """Kill what the dead worker left in its process group (its pool child may still run a job)."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


_current: WorkerSupervisor | None = None


def set_current(supervisor: WorkerSupervisor | None) -> None:
    """The supervisor of this process's embedded worker, for /readyz (None: there is none)."""
    global _current
    _current = supervisor


def current() -> WorkerSupervisor | None:
    return _current
