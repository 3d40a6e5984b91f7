"""Request dependencies: settings, a DB session, the artifact store and the authenticated tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from app.api.ratelimit import RateLimiter
from app.core.config import Settings
from app.core.db import session_factory
from app.crud import authenticate
from app.models import Tenant
from app.schemas import ErrorOut
from app.security import hash_api_key, looks_like_api_key
from app.storage import ArtifactStore

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False,
    description="A key from `spectra admin create-key --tenant NAME`.",
)


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    session = session_factory(settings.database_url or "")()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store()


StoreDep = Annotated[ArtifactStore, Depends(get_store)]

_UNAUTHORIZED = {"WWW-Authenticate": "ApiKey"}


def current_tenant(
    request: Request, session: SessionDep, key: Annotated[str | None, Depends(api_key_header)],
) -> Tenant:
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "missing API key: send it in the X-API-Key header", headers=_UNAUTHORIZED)
    tenant = authenticate(session, key=key) if looks_like_api_key(key) else None
    if tenant is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "invalid or revoked API key in X-API-Key", headers=_UNAUTHORIZED)
    limiter: RateLimiter = request.app.state.rate_limiter
    retry_after = limiter.hit(hash_api_key(key))
    if retry_after is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {limiter.per_minute} requests per minute for this API key exceeded; "
            f"retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]

# Documented on every authenticated route, so the OpenAPI lists every status a client can get.
AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked X-API-Key"},
    413: {"model": ErrorOut, "description": "Request body over SPECTRA_MAX_BODY_BYTES"},
    429: {"model": ErrorOut, "description": "Per-key rate limit exceeded; see Retry-After"},
    503: {"model": ErrorOut, "description": "Database, broker or store unavailable; retry"},
}
