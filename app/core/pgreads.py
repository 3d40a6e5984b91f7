"""The API's hot reads on PostgreSQL: psycopg 3 async connections in a small pool of our own, no SQLAlchemy.

Measured on the 2-core benchmark machine, one `SELECT` of a job by id costs ~0.7 ms of API CPU through
SQLAlchemy's async engine (connection facade, execution context, result processing, greenlet
switches) and ~0.2 ms on a bare psycopg connection, at a total budget of well under 1 ms per
request. The statements are still written once as SQLAlchemy Core (app.api.jobreads, app.api.auth)
and compiled here to PostgreSQL SQL once each; SQLite keeps the SQLAlchemy path (app.core.adb).

The pool is deliberately simple: connections are opened on demand by the request that needs one (so
a database outage is a prompt 503 and its end is noticed by the next request, not after a background
reconnect back-off), at most `size` are in use (a read beyond that waits in the event loop, with no
timeout: it holds nothing), and idle ones are kept, never churned. A connection that fails is closed together
with every idle one (after a database restart they are all dead) and the SELECT runs once more.

Rows come back as named tuples with the types app.api.jobjson expects: JSON columns decoded (orjson),
timestamps in UTC (the session's TimeZone is UTC).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_loads
from sqlalchemy import Executable
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)
_DIALECT = PGDialect_psycopg()


def libpq_dsn(url: str) -> str:
    """postgresql+psycopg://... -> the postgresql://... that libpq reads."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgReads:
    def __init__(self, url: str, size: int, json_loads: Callable[[bytes | str], Any]) -> None:
        self._dsn = libpq_dsn(url)
        self._json_loads = json_loads
        self._slots: asyncio.Semaphore | None = None  # created inside the running loop
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._sql: dict[int, tuple[Executable, str]] = {}

    def compiled(self, query: Executable) -> str:
        """PostgreSQL SQL for a Core statement, compiled once (statements are module constants)."""
        entry = self._sql.get(id(query))
        if entry is None or entry[0] is not query:
            entry = self._sql[id(query)] = (query, str(query.compile(dialect=_DIALECT)))
        return entry[1]

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, row_factory=namedtuple_row, connect_timeout=5, options="-c TimeZone=UTC")
        set_json_loads(self._json_loads, conn)
        return conn

    async def _fetch(self, sql: str, params: Mapping[str, Any] | None) -> Sequence[Any]:
        conn = self._idle.pop() if self._idle else await self._connect()
        try:
            cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall()
        except BaseException:
            await conn.close()  # never hand out a connection in an unknown state
            raise
        self._idle.append(conn)
        return rows

    async def read(self, query: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        """All rows of one read-only query. A lost connection comes out as SQLAlchemy's
        OperationalError, like everywhere else in the API (app.main answers 503)."""
        sql = self.compiled(query)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            try:
                return await self._fetch(sql, params)
            except psycopg.OperationalError as exc:
                log.warning("database connection failed, retrying the read once: %s", str(exc).splitlines()[0])
                await self._drop_idle()
            try:
                return await self._fetch(sql, params)  # on a new connection: a SELECT can run twice
            except psycopg.OperationalError as exc:
                await self._drop_idle()
                raise OperationalError(sql, None, exc) from exc

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def close(self) -> None:
        await self._drop_idle()
