"""A prototype of the API changes the load benchmark suggests, applied from outside app/ so the same
benchmark can measure them (`bench/api_load.py --app bench.whatif_app:create_app`). Not for production:
it patches app.core.db's private engine table; the real change belongs in app/ (see bench/README.md).

What it changes, and why (py-spy showed ~30 % of a GET's CPU in thread hand-offs under GIL contention):
1. The cheap dependencies (settings, store) become `async def`: FastAPI runs every plain `def`
   dependency in the threadpool, one hop (queue put, thread wake-up, GIL transfer) each.
2. The session opens in the event loop (sessionmaker() does no I/O) and only its close, which
   rolls back on the wire, goes to the threadpool: one hop instead of two.
3. API key -> tenant is cached for AUTH_CACHE_SECONDS per process: a hit needs neither a thread nor
   the 2 queries (key, then the lazy-loaded tenant). A revoked key keeps working that long at most.
4. 16 worker threads (anyio's default is 40) and a pool of as many connections, no overflow: more
   threads than cores only queue on the GIL, and overflow connections are opened and closed again
   under load (new PostgreSQL backends every few requests).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Request, status
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api import deps
from app.api.ratelimit import RateLimiter
from app.core import db
from app.core.config import Settings, get_settings
from app.crud import authenticate
from app.main import create_app as create_base_app
from app.security import hash_api_key, looks_like_api_key

THREADS = 16
AUTH_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class CachedTenant:
    """What the routes read from the tenant (id, name), detached from any session."""

    id: int
    name: str


def _use_small_pool(settings: Settings) -> None:
    url = db.normalize_url(settings.database_url or "")
    if url.startswith("sqlite"):
        return
    with db._lock:
        db._engines[url] = create_engine(url, pool_pre_ping=True, pool_size=THREADS, max_overflow=0,
                                         pool_timeout=5, connect_args={"connect_timeout": 5})


def create_app() -> FastAPI:
    settings = get_settings()
    _use_small_pool(settings)
    app = create_base_app(settings)
    factory = db.session_factory(settings.database_url or "")
    tenants: dict[str, tuple[float, CachedTenant | None]] = {}

    async def settings_dep(request: Request) -> Settings:
        return request.app.state.settings

    async def store_dep(request: Request) -> Any:
        return request.app.state.store()

    async def session_dep() -> AsyncIterator[Session]:
        session = factory()
        try:
            yield session
        finally:
            await run_in_threadpool(session.close)

    def lookup(key: str) -> CachedTenant | None:
        with db.session_scope(settings.database_url or "") as session:
            tenant = authenticate(session, key=key)
            return CachedTenant(tenant.id, tenant.name) if tenant is not None else None

    async def tenant_dep(request: Request,
                         key: Annotated[str | None, Depends(deps.api_key_header)]) -> CachedTenant:
        if not key or not looks_like_api_key(key):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid API key in X-API-Key",
                                headers={"WWW-Authenticate": "ApiKey"})
        digest = hash_api_key(key)
        now = time.monotonic()
        hit = tenants.get(digest)
        if hit is None or hit[0] < now:
            hit = tenants[digest] = (now + AUTH_CACHE_SECONDS, await run_in_threadpool(lookup, key))
        if hit[1] is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key in X-API-Key",
                                headers={"WWW-Authenticate": "ApiKey"})
        limiter: RateLimiter = request.app.state.rate_limiter
        retry_after = limiter.hit(digest)
        if retry_after is not None:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "rate limit exceeded",
                                headers={"Retry-After": str(retry_after)})
        return hit[1]

    app.dependency_overrides.update({deps.get_settings_dep: settings_dep, deps.get_store: store_dep,
                                     deps.get_session: session_dep, deps.current_tenant: tenant_dep})
    base_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        async with base_lifespan(target) as state:
            yield state

    app.router.lifespan_context = lifespan
    return app
