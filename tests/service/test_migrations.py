"""`alembic upgrade head` builds the schema from nothing on PostgreSQL and SQLite, and it matches the
ORM models exactly (alembic's compare_metadata finds no difference); downgrade removes it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.core.db import normalize_url
from app.core.migrations import alembic_config, upgrade_head
from app.models import Base
from tests.service.api_env import throwaway_postgres


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with throwaway_postgres() as url:
        yield url


def test_upgrade_from_nothing_matches_the_models(empty_database: str) -> None:
    upgrade_head(empty_database)
    upgrade_head(empty_database)  # idempotent: the second run is a no-op
    engine = create_engine(normalize_url(empty_database))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            tables = set(inspect(conn).get_table_names())
        assert diff == [], f"models and migrations disagree: {diff}"
        assert {"tenants", "api_keys", "jobs", "job_events", "artifacts", "datasets", "alembic_version"} <= tables
        command.downgrade(alembic_config(empty_database), "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
