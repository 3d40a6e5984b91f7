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

Queries go straight through libpq (`psycopg.pq`, the connection's `pgconn`): each statement is prepared
once per connection and then sent as one `Bind/Execute` with text parameters, and the process waits on
the socket in the event loop. psycopg's own execute path (a cursor per query, query conversion, its
wait generators, row makers) was about a third of a polled read's API CPU (bench/README.md); psycopg
still opens and closes the connections. Rows come back as named tuples with the types app.api.jobjson
expects: text, integers, timestamps in UTC (the session's TimeZone is UTC), JSON columns decoded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import namedtuple
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Callable

import psycopg
from psycopg import pq
from sqlalchemy import Executable
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)
_NUMBERED = PGDialect_psycopg(paramstyle="numeric_dollar")  # $1, $2: what libpq's prepared statements take
# Column decoders by type OID; any other type comes back as text.
_INTEGERS = {20, 21, 23, 26, 28}  # int8, int2, int4, oid, xid
_FLOATS = {700, 701}
_TIMESTAMPS = {1114, 1184}
_JSON = {114, 3802}


def libpq_dsn(url: str) -> str:
    """postgresql+psycopg://... -> the postgresql://... that libpq reads."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class _Statement:
    """A Core statement as libpq takes it: $n SQL, the names of its parameters in order, a name to
    prepare it under (the same on every connection)."""

    __slots__ = ("query", "sql", "names", "name", "shape")

    def __init__(self, query: Executable, number: int) -> None:
        compiled = query.compile(dialect=_NUMBERED)
        self.query = query
        self.sql = str(compiled).encode()
        self.names = tuple(compiled.positiontup or ())
        self.name = b"spectra_read_%d" % number
        # Its rows' named-tuple type and column decoders, from its first result (always the same columns).
        self.shape: tuple[Any, list[Callable[[bytes], Any]]] | None = None


class _Connection:
    __slots__ = ("conn", "prepared")

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.prepared: set[bytes] = set()


def _param(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format. It is prepared untyped, so PostgreSQL takes its type from
    the statement: SQLAlchemy's psycopg dialect casts most parameters ($1::INTEGER), and a comparison
    or LIMIT gives the rest theirs; a bare `SELECT $1` would read as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, datetime):
        return value.isoformat().encode()
    if isinstance(value, (list, tuple)):
        items = (str(item).replace("\\", "\\\\").replace('"', '\\"') for item in value)
        return ("{" + ",".join(f'"{item}"' for item in items) + "}").encode()
    return str(value).encode()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PgReads:
    def __init__(self, url: str, size: int, json_loads: Callable[[bytes | str], Any]) -> None:
        self._dsn = libpq_dsn(url)
        self._json_loads = json_loads
        self._slots: asyncio.Semaphore | None = None  # created inside the running loop
        self._size = size
        self._idle: list[_Connection] = []
        self._statements: dict[int, _Statement] = {}

    def statement(self, query: Executable) -> _Statement:
        """The libpq form of a Core statement, made once (statements are module constants)."""
        entry = self._statements.get(id(query))
        if entry is None or entry.query is not query:
            entry = self._statements[id(query)] = _Statement(query, len(self._statements))
        return entry

    async def _connect(self) -> _Connection:
        conn = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, connect_timeout=5, options="-c TimeZone=UTC")
        return _Connection(conn)

    async def _fetch(self, statement: _Statement, params: Mapping[str, Any] | None) -> Sequence[Any]:
        given = params or {}
        missing = [name for name in statement.names if name not in given]
        if missing:  # as psycopg refused it: never a silent NULL
            raise psycopg.ProgrammingError(f"query parameters missing: {', '.join(missing)}")
        values = [_param(given[name]) for name in statement.names]
        held = self._idle.pop() if self._idle else await self._connect()
        try:
            pgconn = held.conn.pgconn
            if statement.name not in held.prepared:
                pgconn.send_prepare(statement.name, statement.sql)
                await self._result(pgconn)
                held.prepared.add(statement.name)
            pgconn.send_query_prepared(statement.name, values)
            rows = self._rows(statement, await self._result(pgconn))
        except BaseException:
            await held.conn.close()  # never hand out a connection in an unknown state
            raise
        self._idle.append(held)
        return rows

    async def _result(self, pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
        """The one result of the command just sent, waiting on the socket in the event loop."""
        while pgconn.flush():
            await self._ready(pgconn.socket, writable=True)
        pgconn.consume_input()
        while pgconn.is_busy():
            await self._ready(pgconn.socket, writable=False)
            pgconn.consume_input()
        results = []
        while (result := pgconn.get_result()) is not None:
            results.append(result)
        failed = next((r for r in results if r.status == pq.ExecStatus.FATAL_ERROR), None)
        if failed is not None or not results:
            message = (failed.error_message if failed is not None else pgconn.error_message).decode(errors="replace")
            if pgconn.status != pq.ConnStatus.OK or failed is None:
                raise psycopg.OperationalError(message.strip() or "the database connection was lost")
            code = failed.error_field(pq.DiagnosticField.SQLSTATE)
            raise psycopg.errors.lookup(code.decode())(message.strip()) if code else psycopg.DatabaseError(message)
        return results[-1]

    @staticmethod
    async def _ready(fd: int, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if writable:
            loop.add_writer(fd, _wake, future)
        else:
            loop.add_reader(fd, _wake, future)
        try:
            await future
        finally:
            if writable:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    def _rows(self, statement: _Statement, result: pq.abc.PGresult) -> list[Any]:
        if result.status != pq.ExecStatus.TUPLES_OK:
            return []
        fields = range(result.nfields)
        if statement.shape is None:
            statement.shape = (namedtuple("Row", [(result.fname(i) or b"").decode() for i in fields]),  # type: ignore[misc]
                               [self._decoder(result.ftype(i)) for i in fields])
        row_type, decoders = statement.shape
        get = result.get_value
        rows = []
        for r in range(result.ntuples):
            values = []
            for c in fields:
                raw = get(r, c)
                values.append(None if raw is None else decoders[c](raw))
            rows.append(row_type._make(values))
        return rows

    def _decoder(self, oid: int) -> Callable[[bytes], Any]:
        if oid in _INTEGERS:
            return int
        if oid in _FLOATS:
            return float
        if oid in _TIMESTAMPS:
            return lambda raw: datetime.fromisoformat(raw.decode())
        if oid == 16:
            return lambda raw: raw == b"t"
        if oid in _JSON:
            return self._json_loads
        return bytes.decode

    async def read(self, query: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        """All rows of one read-only query. A lost connection comes out as SQLAlchemy's
        OperationalError, like everywhere else in the API (app.main answers 503)."""
        statement = self.statement(query)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            try:
                return await self._fetch(statement, params)
            except psycopg.OperationalError as exc:
                log.warning("database connection failed, retrying the read once: %s", str(exc).splitlines()[0])
                await self._drop_idle()
            try:
                return await self._fetch(statement, params)  # on a new connection: a SELECT can run twice
            except psycopg.OperationalError as exc:
                await self._drop_idle()
                raise OperationalError(statement.sql.decode(), None, exc) from exc

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for held in idle:
            await held.conn.close()

    async def close(self) -> None:
        await self._drop_idle()
