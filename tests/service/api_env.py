"""Fixtures for the API tests: a throwaway PostgreSQL database, and the API served by a real uvicorn
over HTTP (PostgreSQL + Redis broker db, or the embedded SQLite + filesystem broker). Nobody consumes
the queue here: the tests assert job rows, not runs (the worker's e2e tests do that)."""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from app import crud
from app.core.db import dispose_engines, libpq_dsn, session_scope
from app.core.migrations import upgrade_head
from tests.service.support.processes import free_port, start_api

POSTGRES_URL = os.environ.get("SPECTRA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SPECTRA_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
MODEL_ROOT = "/srv/spectra-models"
DATA_ROOT = "/srv/spectra-data"
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 3  # seconds for a request body to arrive (slowloris tests wait for it)


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """CREATE DATABASE spectra_api_<random> (empty, not migrated); DROP it afterwards."""
    name = f"spectra_api_{secrets.token_hex(5)}"
    admin = libpq_dsn(POSTGRES_URL)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"PostgreSQL is not reachable at {POSTGRES_URL} (set SPECTRA_TEST_POSTGRES_URL "
                           f"or run .ci/run, which starts it): {exc}") from exc
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_engines()
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ApiServer:
    kind: str
    base_url: str
    database_url: str
    broker_url: str
    home: Path

    def new_key(self, tenant: str) -> str:
        with session_scope(self.database_url) as session:
            _, key = crud.create_api_key(session, tenant_name=tenant)
        return key

    def client(self, key: str | None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=20)


# The operator's key: /readyz details and /metrics (app/api/operator.py).
ADMIN_KEY = "test-admin-key"
OPERATOR = {"X-Admin-Key": ADMIN_KEY}


def server_env(home: Path, database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRA_")}
    env.update({
        "SPECTRA_HOME": str(home), "SPECTRA_DATABASE_URL": database_url, "SPECTRA_BROKER_URL": broker_url,
        "SPECTRA_MODEL_ROOTS": MODEL_ROOT, "SPECTRA_DATA_ROOTS": DATA_ROOT,
        "SPECTRA_SIGNING_SECRET": "test-signing-secret",
        "SPECTRA_ADMIN_KEY": ADMIN_KEY,
        "SPECTRA_MAX_BODY_BYTES": str(MAX_BODY),
        "SPECTRA_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        # Check the key on every request: these tests revoke a key and expect the next request to fail
        # (the cache's own behaviour is tested in test_api_reads.py).
        "SPECTRA_AUTH_CACHE_SECONDS": "0",
    })
    env.update(extra)
    return env


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The API on a real uvicorn: PostgreSQL + a Redis db as broker, or embedded SQLite + filesystem broker."""
    home = tmp_path_factory.mktemp(f"api-{request.param}")
    port = free_port()
    with backing_services(request.param, home) as (database_url, broker_url):
        process = start_api(server_env(home, database_url, broker_url, SPECTRA_PUBLIC_URL=f"http://127.0.0.1:{port}"),
                            port, home / "logs")
        try:
            yield ApiServer(request.param, f"http://127.0.0.1:{port}", database_url, broker_url, home)
        finally:
            process.stop()


@contextmanager
def backing_services(kind: str, home: Path) -> Iterator[tuple[str, str]]:
    if kind == "sqlite":
        url = f"sqlite:///{home / 'spectra.db'}"
        upgrade_head(url)
        yield url, "filesystem://"
        dispose_engines()
        return
    with throwaway_postgres() as url, redis_broker() as broker:
        upgrade_head(url)
        yield url, broker


@contextmanager
def redis_broker() -> Iterator[str]:
    """A Redis db (1-15) for the broker; the gpu queue is deleted afterwards (nobody consumes it)."""
    from tests.service.support.infra import _DBS_IN_USE  # a db no stack of this session uses

    number = random.choice(sorted(set(range(1, 16)) - _DBS_IN_USE))
    _DBS_IN_USE.add(number)
    broker = f"{REDIS_URL}/{number}"
    client = redis.Redis.from_url(broker, socket_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise RuntimeError(f"Redis is not reachable at {REDIS_URL} (set SPECTRA_TEST_REDIS_URL or run "
                           f".ci/run): {exc}") from exc
    try:
        yield broker
    finally:
        _DBS_IN_USE.discard(number)
        client.delete("gpu")
        client.close()


def job_body(**overrides: object) -> dict[str, object]:
    """A small valid job (the same shape the worker's e2e tests run)."""
    body: dict[str, object] = {
        "model": "raincandy-u/TinyStories-656K", "method": "svd", "target_ratio": 0.2,
        "calibration": {"source": "tinystories", "samples": 4, "seq_len": 64},
        "evaluation": {"corpus": "tinystories", "seq_len": 128, "max_windows": 2},
    }
    body.update(overrides)
    return body
