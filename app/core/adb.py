"""The API's one database path: SQLAlchemy's async engine and sessions (psycopg 3 on PostgreSQL,
aiosqlite for the embedded SQLite). Every route reads and writes through `AsyncDatabase.session()`;
app.crud's sync functions run inside it through `AsyncSession.run_sync`.

Why async on the request path: a sync session needs a worker thread for every blocking step and
holds its connection across the thread hops; here a request awaits its queries in the event loop
and holds a connection only while they run.

The engine is created on first use inside the running loop (its connections belong to that loop,
and TestClient runs each app in a loop of its own) and disposed when the app shuts down.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.core.db import normalize_url, sqlite_pragmas

# Connections per API process. app.api.middleware.InflightLimit admits at most this many requests
# at once, so a request never waits on the pool (no pool_timeout under load) and, with no overflow,
# no connection is opened and closed again per burst (each is a PostgreSQL backend fork).
API_POOL_SIZE = 16


def async_url(url: str) -> str:
    """The async driver for the same database: psycopg 3 serves both; SQLite goes through aiosqlite."""
    url = normalize_url(url)
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:"):]
    return url


class AsyncDatabase:
    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.is_sqlite = make_url(self.url).get_backend_name() == "sqlite"
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = self._create()
        return self._engine

    def _create(self) -> AsyncEngine:
        if self.is_sqlite:
            engine = create_async_engine(self.url, connect_args={"timeout": 10})
            event.listen(engine.sync_engine, "connect", sqlite_pragmas)
            return engine
        # pre_ping: connections that died while the database restarted are replaced, not handed out.
        return create_async_engine(
            self.url, pool_pre_ping=True, pool_size=API_POOL_SIZE, max_overflow=0, pool_timeout=5,
            connect_args={"connect_timeout": 5},
        )

    def session(self) -> AsyncSession:
        """An ORM session; use as `async with db.session() as session:`."""
        if self._sessions is None:
            self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        return self._sessions()

    async def dispose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = self._sessions = None
