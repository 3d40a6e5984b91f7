"""The API's database access on asyncio. Reads: bare psycopg 3 async connections on PostgreSQL
(app.core.pgreads), SQLAlchemy's async engine on aiosqlite for SQLite. Writes (POST): an
AsyncSession on the async engine (psycopg 3 async or aiosqlite).

Why not the sync engine of app.core.db on the request path: a sync session needs a worker thread
for every blocking step, and each threadpool hop is a queue put, a thread wake-up and two GIL
hand-overs; a request also held its connection while it waited for the next thread (bench/README.md).
Here a request awaits its queries in the event loop and holds a connection only while they run.

The engine is created on first use inside the running loop (its connections belong to that loop,
and TestClient runs each app in a loop of its own) and disposed when the app shuts down.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Executable, Row, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.core.db import normalize_url, sqlite_pragmas
from app.core.pgreads import PgReads

# Connections per API process. app.api.middleware.InflightLimit admits at most this many requests
# at once, so a request never waits on the pool (no pool_timeout under load) and, with no overflow,
# no connection is opened and closed again per burst (each is a PostgreSQL backend fork).
API_POOL_SIZE = 16
# Connections of the polled reads (app.core.pgreads), fewer than the requests admitted: a read's query
# is ~0.15 ms of PostgreSQL CPU, so 4 at a time keep a 2-core host's database busy, and every further
# backend only competes for the same cores (bench/api_load.py, page of 50 at 64 connections: PostgreSQL
# CPU per page 0.19 ms with 16, 0.16-0.17 ms with 4; p99 48 -> 38-44 ms). Reads beyond them wait in the
# event loop.
READ_POOL_SIZE = 4


def async_url(url: str) -> str:
    """The async driver for the same database: psycopg 3 serves both; SQLite goes through aiosqlite."""
    url = normalize_url(url)
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:"):]
    return url


# Digits -> "0", everything else -> " ": 19 zeros in a row then mean a number of 19+ digits, possibly
# an integer beyond 64 bits, which orjson would turn into a float. (A C-speed check: a regex scan
# cost as much as the parse itself.)
_DIGIT_MAP = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_LONG_NUMBER = b"0" * 19


def _json_loads(text: str | bytes) -> Any:
    """JSON columns (spec, metrics) in a quarter of the stdlib's time. The stdlib for what orjson
    would read differently (integers beyond 64 bits: a spec may hold one) or refuses (NaN), so every
    stored document reads back exactly as before."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if _LONG_NUMBER not in raw.translate(_DIGIT_MAP):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


class AsyncDatabase:
    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.is_sqlite = make_url(self.url).get_backend_name() == "sqlite"
        self._engine: AsyncEngine | None = None
        self._pg = None if self.is_sqlite else PgReads(self.url, READ_POOL_SIZE, _json_loads)
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = self._create()
        return self._engine

    def _create(self) -> AsyncEngine:
        if self.is_sqlite:
            engine = create_async_engine(self.url, connect_args={"timeout": 10}, json_deserializer=_json_loads)
            event.listen(engine.sync_engine, "connect", sqlite_pragmas)
            return engine
        # PostgreSQL: this engine serves the writes (POST) only; reads go through PgReads.
        # pre_ping: connections that died while the database restarted are replaced, not handed out.
        return create_async_engine(
            self.url, pool_pre_ping=True, pool_size=API_POOL_SIZE, max_overflow=0, pool_timeout=5,
            connect_args={"connect_timeout": 5}, json_deserializer=_json_loads,
        )

    async def read(self, query: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Row[Any]]:
        """All rows of one read-only query: bare psycopg on PostgreSQL (app.core.pgreads), the
        async engine on SQLite."""
        if self._pg is not None:
            return await self._pg.read(query, params)
        for attempt in (1, 2):
            try:
                async with self.engine.connect() as conn:
                    return (await conn.execute(query, params)).all()
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def session(self) -> AsyncSession:
        """An ORM session in a transaction, for writes; app.crud's sync functions run in it through
        `run_sync`."""
        if self._sessions is None:
            self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        return self._sessions()

    async def dispose(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = self._sessions = None
