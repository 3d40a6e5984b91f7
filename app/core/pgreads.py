"""The API's hot reads on PostgreSQL: psycopg 3 async connections from psycopg_pool, no SQLAlchemy.

Measured on the 2-core benchmark machine, one `SELECT` of a job by id costs ~0.7 ms of API CPU through
SQLAlchemy's async engine (connection facade, execution context, result processing, greenlet
switches) and ~0.23 ms through psycopg_pool, at a total budget of well under 1 ms per request. The
statements are still written once as SQLAlchemy Core (app.api.jobreads, app.api.auth) and compiled
here to PostgreSQL SQL once each; SQLite keeps the SQLAlchemy path (app.core.adb).

Rows come back as named tuples with the types app.api.jobjson expects: JSON columns decoded (orjson),
timestamps in UTC (the session's TimeZone is UTC).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout
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
    def __init__(self, url: str, size: int, json_loads: Callable[[bytes | str], Any], timeout: float = 5) -> None:
        self._dsn = libpq_dsn(url)
        self._size = size
        self._timeout = timeout
        self._json_loads = json_loads
        self._pool: AsyncConnectionPool | None = None
        self._sql: dict[int, tuple[Executable, str]] = {}

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        set_json_loads(self._json_loads, conn)

    async def pool(self) -> AsyncConnectionPool:
        if self._pool is None:  # created inside the running loop, which its connections belong to
            self._pool = AsyncConnectionPool(
                self._dsn, min_size=1, max_size=self._size, timeout=self._timeout, open=False,
                kwargs={"autocommit": True, "row_factory": namedtuple_row, "connect_timeout": 5,
                        "options": "-c TimeZone=UTC"},
                configure=self._configure, name="api-reads",
            )
        await self._pool.open()  # no-op once open
        return self._pool

    def compiled(self, query: Executable) -> str:
        """PostgreSQL SQL for a Core statement, compiled once (statements are module constants)."""
        entry = self._sql.get(id(query))
        if entry is None or entry[0] is not query:
            entry = self._sql[id(query)] = (query, str(query.compile(dialect=_DIALECT)))
        return entry[1]

    async def read(self, query: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        """All rows of one read-only query; 503-worthy failures come out as SQLAlchemy's
        OperationalError, like everywhere else in the API (app.main maps it to 503)."""
        sql = self.compiled(query)
        pool = await self.pool()
        for attempt in (1, 2):
            try:
                async with pool.connection() as conn:
                    cursor = await conn.execute(sql, params)
                    return await cursor.fetchall()
            except PoolTimeout as exc:  # no connection could be made or freed within the timeout
                raise OperationalError(sql, None, exc) from exc
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    raise OperationalError(sql, None, exc) from exc
                # A pooled connection died (the database restarted since it was used): drop the
                # dead ones and run the SELECT once more, which is always safe.
                log.warning("database connection lost, retrying the read once: %s", str(exc).splitlines()[0])
                await pool.check()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
