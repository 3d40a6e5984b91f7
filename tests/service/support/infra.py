"""Backing services for the service tests: a fresh PostgreSQL database, a Redis db, moto's S3 server,
an offline Hugging Face cache. Each fixture cleans up after itself; nothing here is mocked."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.service.support.processes import REPO

REDIS_URL = os.environ.get("SPECTRA_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
S3_BUCKET = "spectra-test"


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database migrated with the real `spectra migrate` command; dropped after."""
    from tests.service.api_env import throwaway_postgres

    with throwaway_postgres() as url:
        migrate(url)
        yield url


def migrate(database_url: str, extra_env: Mapping[str, str] | None = None) -> None:
    env = {**os.environ, **(extra_env or {}), "SPECTRA_DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"spectra migrate failed:\n{done.stdout}\n{done.stderr}")


_DBS_IN_USE: set[int] = set()


@contextmanager
def redis_database() -> Iterator[str]:
    """A Redis db number of its own (1-15), flushed before and after. Two stacks of one test session never
    share one: a worker of the other stack would take (and, finding nothing in its database, drop) this
    stack's messages."""
    number = random.choice(sorted(set(range(1, 16)) - _DBS_IN_USE))
    _DBS_IN_USE.add(number)
    url = f"{REDIS_URL}/{number}"
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        raise RuntimeError(f"Redis is not reachable at {REDIS_URL} (set SPECTRA_TEST_REDIS_URL, or run "
                           f"`bash .ci/run`, which starts it): {exc}") from exc
    try:
        yield url
    finally:
        _DBS_IN_USE.discard(number)
        client.flushdb()
        client.close()


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)


@contextmanager
def moto_s3() -> Iterator[S3Server]:
    """moto's ThreadedMotoServer on 127.0.0.1, a free port, with one bucket."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(endpoint=f"http://{host}:{port}", bucket=S3_BUCKET)
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()


class RedisServer:
    """A redis-server of our own on a free port, so a test can restart it without touching others'."""

    def __init__(self, workdir: Path, log_dir: Path) -> None:
        from tests.service.support.processes import free_port

        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir, self._log_dir = workdir, log_dir
        self._generation = 0
        self.process = self._start()

    def _start(self) -> Any:
        from tests.service.support.processes import Process, wait_until

        self._workdir.mkdir(parents=True, exist_ok=True)
        self._generation += 1
        # No persistence, as in CI: a restart loses every message, which is what the sweeper must survive.
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self._workdir)]
        process = Process(f"redis-{self.port}-{self._generation}", command, os.environ, self._log_dir)
        wait_until(self._answers, 20, "redis-server", process=process)
        return process

    def _answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def restart(self, down_seconds: float = 1.0) -> None:
        import signal
        import time

        self.process.kill(signal.SIGKILL)
        self.process.stop()
        time.sleep(down_seconds)
        self.process = self._start()

    def stop(self) -> None:
        self.process.stop()
