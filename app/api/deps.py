"""Request dependencies: settings, a DB session, the artifact store and the authenticated tenant.

The ones that do no I/O are `async def`, so FastAPI calls them inline instead of on a worker thread;
authentication awaits the async engine and the rate limiter's Redis on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from app.api.auth import Principal, authenticate
from app.api.ratelimit import RateLimiter
from app.core.adb import AsyncDatabase
from app.core.config import Settings
from app.schemas import ErrorOut
from app.security import hash_api_key
from app.storage import ArtifactStore

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False,
    description="A key from `spectra admin create-key --tenant NAME`.",
)


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_db(request: Request) -> AsyncDatabase:
    return request.app.state.db


DbDep = Annotated[AsyncDatabase, Depends(get_db)]


async def get_session(db: DbDep) -> AsyncIterator[AsyncSession]:
    """The request's ORM session (app.core.adb); app.crud's sync functions run in it via run_sync."""
    async with db.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store()


StoreDep = Annotated[ArtifactStore, Depends(get_store)]

_UNAUTHORIZED = {"WWW-Authenticate": "ApiKey"}


async def current_tenant(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> Principal:
    return await tenant_for_key(request.app.state, key)


async def tenant_for_key(state: State, key: str | None) -> Principal:
    """The tenant behind an X-API-Key value, after its rate limit: 401 or 429 as HTTPException."""
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "missing API key: send it in the X-API-Key header", headers=_UNAUTHORIZED)
    digest = hash_api_key(key)
    tenant = await authenticate(state.db, state.key_cache, key, digest)
    if tenant is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "invalid or revoked API key in X-API-Key", headers=_UNAUTHORIZED)
    limiter: RateLimiter = state.rate_limiter
    retry_after = await limiter.hit(digest)
    if retry_after is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {limiter.per_minute} requests per minute for this API key exceeded; "
            f"retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    return tenant


TenantDep = Annotated[Principal, Depends(current_tenant)]

# Documented on every authenticated route, so the OpenAPI lists every status a client can get.
AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked X-API-Key"},
    413: {"model": ErrorOut, "description": "Request body over SPECTRA_MAX_BODY_BYTES"},
    429: {"model": ErrorOut, "description": "Per-key rate limit exceeded; see Retry-After"},
    503: {"model": ErrorOut, "description": "Database, broker or store unavailable; retry"},
}
