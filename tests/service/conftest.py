"""Service fixtures: real PostgreSQL, Redis, moto S3, uvicorn and Celery worker processes.

Distributed mode = PostgreSQL + Redis broker + S3 (moto server) + uvicorn + Celery prefork workers.
Embedded mode = `spectra serve` with its defaults (SQLite, filesystem broker, local store, one worker).
Everything binds 127.0.0.1, is bounded in time, and is torn down even when a test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.support.client import ApiClient
from tests.service.support.infra import S3Server, fresh_postgres_database, moto_s3, redis_database
from tests.service.support.stack import Stack, base_env, new_port, running_stack
from tests.support.hf_cache import seed_hf_cache



@pytest.fixture(scope="session")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("hf")
    seed_hf_cache(home)
    return home


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with moto_s3() as server:
        yield server


def distributed_env(home: Path, hf_home: Path, port: int, database_url: str, broker_url: str,
                    s3: S3Server) -> dict[str, str]:
    env = base_env(home, hf_home, port)
    env.update({
        "SPECTRA_DATABASE_URL": database_url,
        "SPECTRA_BROKER_URL": broker_url,
        "SPECTRA_ARTIFACT_STORE": f"s3://{s3.bucket}/{home.name}",
        "SPECTRA_S3_ENDPOINT_URL": s3.endpoint,
        "SPECTRA_S3_PUBLIC_ENDPOINT_URL": s3.endpoint,
        "SPECTRA_S3_REGION": s3.region,
        "SPECTRA_S3_ACCESS_KEY_ID": s3.access_key,
        "SPECTRA_S3_SECRET_ACCESS_KEY": s3.secret_key,
    })
    return env


@pytest.fixture(scope="session")
def distributed(tmp_path_factory: pytest.TempPathFactory, hf_home: Path, s3_server: S3Server) -> Iterator[Stack]:
    """API + one worker on PostgreSQL, Redis and S3; shared by the tests that do not break it."""
    home = tmp_path_factory.mktemp("dist")
    port = new_port()
    with fresh_postgres_database() as database_url, redis_database() as broker_url:
        env = distributed_env(home, hf_home, port, database_url, broker_url, s3_server)
        with running_stack(env, port, home / "logs", embedded=False) as stack:
            yield stack


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory, hf_home: Path) -> Iterator[Stack]:
    """`spectra serve` with the embedded defaults under a fresh SPECTRA_HOME."""
    home = tmp_path_factory.mktemp("embedded")
    port = new_port()
    with running_stack(base_env(home, hf_home, port), port, home / "logs", embedded=True) as stack:
        yield stack


@pytest.fixture(params=["distributed", "embedded"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    """The core path runs in both modes."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def alice(any_stack: Stack) -> ApiClient:
    return any_stack.client("alice")
