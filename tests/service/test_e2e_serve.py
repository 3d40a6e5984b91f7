"""`spectra serve` as the quickstart uses it: one command starts the API and a local worker, and
SIGTERM to that one process stops everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.service.support.processes import free_port, start_serve, wait_until
from tests.service.support.stack import base_env

pytestmark = pytest.mark.integration


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_sigterm_to_serve_stops_its_local_worker(tmp_path: Path, hf_home: Path) -> None:
    port = free_port()
    serve = start_serve(base_env(tmp_path / "home", hf_home, port), port, tmp_path / "logs")
    try:
        wait_until(lambda: " ready." in serve.log_text(), 90, "the local worker", process=serve)
        worker_pids = [int(p) for p in os.popen(f"pgrep -P {serve.pid}").read().split()]
        assert worker_pids, "spectra serve started no worker process"
        serve.popen.send_signal(signal.SIGTERM)  # the serve process only, as a supervisor would
        serve.popen.wait(timeout=60)
        assert serve.popen.returncode == 0, serve.log_text()[-3000:]
        # The worker ran in its own process group; it and its pool children must be gone.
        for pid in worker_pids:
            wait_until(lambda pid=pid: not _group_alive(pid), 30, f"worker group {pid} to exit")
    finally:
        serve.stop()
        for pid in [int(p) for p in os.popen(f"pgrep -P {serve.pid}").read().split()]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
