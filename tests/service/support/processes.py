"""Real subprocesses for the service tests: uvicorn, Celery workers, `spectra serve`.

Every process runs in its own process group with its output in a log file, is waited for with a
deadline, and is always killed (group-wide) at teardown, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process group with a log file; stop() is idempotent and always reaps it."""

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(command, cwd=str(REPO), env=dict(env), stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group (a Celery worker and its pool children)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill(signal.SIGKILL)  # children that outlived their parent, too
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2,
               process: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited while waiting for {what}:\n{process.log_text()[-4000:]}")
        time.sleep(interval)
    tail = "" if process is None else f"\n--- {process.name} log ---\n{process.log_text()[-4000:]}"
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_api(env: Mapping[str, str], port: int, log_dir: Path, timeout: float = 60) -> Process:
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    process = Process(f"api-{port}", command, env, log_dir)
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), timeout, "the API", process=process)
    return process


def start_serve(env: Mapping[str, str], port: int, log_dir: Path, timeout: float = 90) -> Process:
    """`spectra serve` with the embedded defaults: API + local worker + sweeper in one command."""
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = Process(f"serve-{port}", command, env, log_dir)
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), timeout, "spectra serve", process=process)
    return process


def start_worker(env: Mapping[str, str], name: str, log_dir: Path, timeout: float = 60) -> Process:
    """A real Celery worker on queue gpu, one prefork child, waiting until it consumes."""
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "gpu", "-c", "1",
               "--pool", "prefork", "-n", f"{name}@%h", "--loglevel", "INFO", "-O", "fair"]
    process = Process(name, command, {**env, "OMP_NUM_THREADS": "1"}, log_dir)
    wait_until(lambda: " ready." in process.log_text(), timeout, f"worker {name}", process=process)
    return process
