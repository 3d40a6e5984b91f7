"""`spectra serve` as the quickstart uses it: one command starts the API and a local worker, and
SIGTERM to that one process stops everything it started."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.support.client import FAST_JOB, ApiClient
from tests.service.support.processes import REPO, free_port, start_serve, wait_until
from tests.service.support.stack import base_env

pytestmark = pytest.mark.integration

# A few seconds of whitened SVD with a progress call per calibration window (as test_worker_faults.py).
MEDIUM_JOB: dict[str, Any] = {**FAST_JOB, "method": "svd_llm",
                              "calibration": {"source": "tinystories", "samples": 64, "seq_len": 128}}


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


OPERATOR_KEY = "operator-key-for-readyz-details"


def _worker_check(port: int) -> dict[str, object]:
    """/readyz's worker check (its details are the operator's: X-Admin-Key)."""
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", headers={"X-Admin-Key": OPERATOR_KEY}, timeout=10)
    return dict(ready.json()["checks"]["worker"])


def _worker_pid(port: int) -> int | None:
    found = re.search(r"running \(pid (\d+)\)", str(_worker_check(port)["detail"]))
    return int(found.group(1)) if found else None


def test_serve_restarts_its_sigkilled_worker_and_the_job_still_succeeds(tmp_path: Path, hf_home: Path) -> None:
    """The embedded default survives a dead worker: serve restarts it (with backoff, shown by /readyz),
    the sweeper re-queues the job it was running, and the new worker finishes it; nobody restarts anything."""
    port = free_port()
    env = {**base_env(tmp_path / "home", hf_home, port), "SPECTRA_ADMIN_KEY": OPERATOR_KEY}
    serve = start_serve(env, port, tmp_path / "logs")
    leftovers: list[int] = []
    try:
        wait_until(lambda: " ready." in serve.log_text(), 90, "the local worker", process=serve)
        first = _worker_pid(port)
        assert first is not None and _worker_check(port)["ok"] is True
        leftovers.append(first)
        key = subprocess.run([sys.executable, "-m", "app.cli", "admin", "create-key", "--tenant", "alice"], env=env,
                             cwd=str(REPO), capture_output=True, text=True, timeout=120, check=True).stdout.strip()
        alice = ApiClient(f"http://127.0.0.1:{port}", key)
        job = alice.submit_ok(MEDIUM_JOB)
        alice.wait(job["id"], lambda j: j["status"] == "running" and j["progress"]["stage"] == "compress",
                   timeout=120, what="the job to be compressing")
        os.killpg(first, signal.SIGKILL)  # the worker and its pool child, as the OOM killer would
        wait_until(lambda: _worker_pid(port) not in (None, first), 60, "serve to start a new worker", process=serve)
        second = _worker_pid(port)
        assert second is not None
        leftovers.append(second)
        check = _worker_check(port)
        assert check["ok"] is True and "restarted 1 times (last exit status -9)" in str(check["detail"])
        final = alice.wait_terminal(job["id"], timeout=240)
        assert final["status"] == "succeeded" and final["attempts"] == 2, f"{final}\n{serve.log_text()[-3000:]}"
        assert "worker lost after attempt 1; re-queued" in [e["message"] for e in alice.events(job["id"])]
        alice.close()
    finally:
        serve.stop()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
