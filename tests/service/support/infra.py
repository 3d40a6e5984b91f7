"""Backing services for the service tests: a fresh PostgreSQL database, a Redis db, moto's S3 server,
an offline Hugging Face cache. Each fixture cleans up after itself; nothing here is mocked."""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import redis
from sqlalchemy.engine import make_url

from tests.service.support.processes import REPO

POSTGRES_URL = os.environ.get("SPECTRA_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres:spectra@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SPECTRA_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
S3_BUCKET = "spectra-test"


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """CREATE DATABASE spectra_t_<random>, migrate it with `spectra migrate`, DROP it at the end."""
    name = f"spectra_t_{secrets.token_hex(6)}"
    admin = _libpq(POSTGRES_URL)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"PostgreSQL is not reachable at {POSTGRES_URL} (set SPECTRA_TEST_POSTGRES_URL, "
                           f"or run `bash .ci/run`, which starts it): {exc}") from exc
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(database_url: str, extra_env: Mapping[str, str] | None = None) -> None:
    env = {**os.environ, **(extra_env or {}), "SPECTRA_DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"spectra migrate failed:\n{done.stdout}\n{done.stderr}")


@contextmanager
def redis_database() -> Iterator[str]:
    """A Redis db number of its own (1-15), flushed before and after."""
    url = f"{REDIS_URL}/{random.randint(1, 15)}"
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        raise RuntimeError(f"Redis is not reachable at {REDIS_URL} (set SPECTRA_TEST_REDIS_URL, or run "
                           f"`bash .ci/run`, which starts it): {exc}") from exc
    try:
        yield url
    finally:
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
