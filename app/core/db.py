"""Engines and sessions: SQLite (WAL, foreign keys) for the embedded mode, PostgreSQL via psycopg 3."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Lock

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Connections per process for the sync sessions (worker, sweeper, metrics, readiness, and the API
# routes that are not on the hot path). Those routes hold a connection across threadpool hops, so
# app.api.middleware.InflightLimit keeps the requests in flight (app.core.adb.API_POOL_SIZE) below
# POOL_CONNECTIONS: a request never waits on this pool for a connection held by a request that is
# itself waiting for a thread.
POOL_SIZE = 10
POOL_CONNECTIONS = 30

_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}
_lock = Lock()


def normalize_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and use the psycopg 3 driver for both."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def libpq_dsn(url: str) -> str:
    """postgresql+psycopg://... -> the postgresql://... that libpq (psycopg.connect, psql) reads."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while the worker writes; busy_timeout waits instead of 'database is locked'.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", sqlite_pragmas)
        return engine
    # pre_ping drops connections that died while the database restarted, so the API recovers by itself.
    return create_engine(
        url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_CONNECTIONS - POOL_SIZE, pool_timeout=5,
        connect_args={"connect_timeout": 5},
    )


def get_engine(url: str) -> Engine:
    """One engine (connection pool) per URL per process."""
    url = normalize_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_db_engine(url)
        return engine


def session_factory(url: str) -> sessionmaker[Session]:
    """One sessionmaker per URL: building one per request costs about a millisecond of event setup."""
    url = normalize_url(url)
    factory = _factories.get(url)
    if factory is None:
        factory = _factories[url] = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    return factory


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (for workers and scripts)."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _forget_engines_in_child() -> None:
    """After a fork, the child must not use the parent's pooled connections: they are the parent's
    sockets, in use by its threads (a Celery worker's sweeper), and a lock held by such a thread at
    the fork would stay held forever. The child builds its own engines on first use. Nothing is
    closed here: closing a PostgreSQL connection would end the parent's session (psycopg does not
    close, on garbage collection, a connection another pid opened)."""
    global _lock
    _lock = Lock()
    _engines.clear()
    _factories.clear()


# Celery's prefork pool forks a new child whenever one is replaced (worker_max_tasks_per_child), long
# after the parent's sweeper thread has opened connections.
os.register_at_fork(after_in_child=_forget_engines_in_child)


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
