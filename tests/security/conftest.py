"""The security suite: each test is one finding (an attack or a careless input) against real processes.

`hostile` is a distributed deployment (PostgreSQL, Redis, S3, uvicorn) whose workers the tests start
themselves, so a test can queue work before any worker takes it. A new attack is a few lines: take
`hostile`, get a client per tenant with `hostile.client(name)`, and assert what the service answers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.conftest import distributed_env, hf_home, s3_server  # noqa: F401 (fixtures)
from tests.service.support.infra import S3Server, fresh_postgres_database, redis_database
from tests.service.support.processes import REPO, Process
from tests.service.support.stack import Stack, new_port

pytestmark = pytest.mark.integration


class HostileStack(Stack):
    model_root: Path
    data_root: Path

    def admin(self, *args: str) -> str:
        """`spectra admin ...` against this deployment; its stdout."""
        done = subprocess.run([sys.executable, "-m", "app.cli", "admin", *args], cwd=str(REPO), env=self.env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"spectra admin {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def worker(self) -> Process:
        """The running worker, started if there is none."""
        alive = [w for w in self.workers if w.alive()]
        self.started = getattr(self, "started", 0) + (not alive)
        return alive[0] if alive else self.start_worker(f"w{self.started}")  # a log file per process

    def stop_workers(self) -> None:
        for process in self.workers:
            process.stop()
        self.workers.clear()


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory, hf_home: Path,  # noqa: F811
            s3_server: S3Server) -> Iterator[HostileStack]:  # noqa: F811
    home = tmp_path_factory.mktemp("hostile")
    port = new_port()
    with fresh_postgres_database() as database_url, redis_database() as broker_url:
        env = distributed_env(home, hf_home, port, database_url, broker_url, s3_server)
        # Local models and calibration files the tests craft (the worker sees the same disk).
        (home / "models").mkdir()
        (home / "data").mkdir()
        env.update({"SPECTRA_MODEL_ROOTS": str(home / "models"), "SPECTRA_DATA_ROOTS": str(home / "data"),
                    "SPECTRA_FLEET_DEVICE": "cpu"})
        stack = HostileStack(env, port, home / "logs")
        stack.model_root, stack.data_root = home / "models", home / "data"
        try:
            stack.start_api()
            yield stack
        finally:
            stack.close()
