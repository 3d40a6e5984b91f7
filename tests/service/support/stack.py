"""A running Spectra: its environment, API process and workers, built from real backing services."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import SHARED
from tests.service.support.client import ApiClient
from tests.service.support.processes import REPO, Process, free_port, start_api, start_serve, start_worker

# Short periods so fault tests finish in seconds; production defaults are 10 s / 60 s / 15 s.
FAST_TIMING = {
    "SPECTRA_HEARTBEAT_SECONDS": "1",
    "SPECTRA_STALE_AFTER_SECONDS": "8",
    "SPECTRA_SWEEP_INTERVAL_SECONDS": "2",
}


OPERATOR_KEY = "stack-admin-key"
OPERATOR = {"X-Admin-Key": OPERATOR_KEY}


def base_env(home: Path, hf_home: Path, port: int) -> dict[str, str]:
    """The environment every process of one stack shares (offline hub cache, shared data)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRA_") or k.startswith("SPECTRA_TEST_")}
    env.update(FAST_TIMING)
    env.update({
        "SPECTRA_HOME": str(home),
        "SPECTRA_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SPECTRA_ADMIN_KEY": OPERATOR_KEY,  # /readyz details and /metrics (app/api/operator.py)
        "SPECTRA_DATA_DIR": str(SHARED / "data"),
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


class Stack:
    """One deployment under test. Tests may start more workers or kill them; close() reaps all."""

    def __init__(self, env: dict[str, str], port: int, log_dir: Path) -> None:
        self.env = env
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self.workers: list[Process] = []
        self._clients: dict[str, ApiClient] = {}

    def start_api(self) -> Process:
        process = start_api(self.env, self.port, self.log_dir)
        self.processes.append(process)
        return process

    def start_serve(self) -> Process:
        process = start_serve(self.env, self.port, self.log_dir)
        self.processes.append(process)
        return process

    def start_worker(self, name: str, **extra_env: str) -> Process:
        process = start_worker({**self.env, **extra_env}, name, self.log_dir)
        self.processes.append(process)
        self.workers.append(process)
        return process

    def only_worker(self, name: str, **extra_env: str) -> Process:
        """Stop every worker of this stack, then start one (with extra settings, e.g. a time limit)."""
        for process in self.workers:
            process.stop()
        self.workers.clear()
        return self.start_worker(name, **extra_env)

    def create_key(self, tenant: str) -> str:
        done = subprocess.run([sys.executable, "-m", "app.cli", "admin", "create-key", "--tenant", tenant],
                              cwd=str(REPO), env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"create-key failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout.strip().splitlines()[-1]

    def client(self, tenant: str) -> ApiClient:
        """A client with an API key of `tenant` (one key per tenant per stack, created on first use)."""
        if tenant not in self._clients:
            self._clients[tenant] = ApiClient(self.base_url, self.create_key(tenant))
        return self._clients[tenant]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_text()[-3000:]}" for p in self.processes)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        for process in reversed(self.processes):
            process.stop()

    def settings(self) -> Any:
        """The same Settings the processes read, for in-process crud/sweeper calls in tests."""
        from app.core.config import Settings

        keys = {k[len("SPECTRA_"):].lower(): v for k, v in self.env.items()
                if k.startswith("SPECTRA_") and not k.startswith("SPECTRA_TEST_")}
        return Settings(**keys)


@contextmanager
def running_stack(env: dict[str, str], port: int, log_dir: Path, *, embedded: bool,
                  workers: int = 1) -> Iterator[Stack]:
    stack = Stack(env, port, log_dir)
    try:
        if embedded:
            stack.start_serve()
        else:
            stack.start_api()
            for i in range(workers):
                stack.start_worker(f"w{i}")
        yield stack
    finally:
        stack.close()


def new_port() -> int:
    return free_port()
