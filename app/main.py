"""The FastAPI application: `uvicorn app.main:create_app --factory` (or `app.main:app`)."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.logredact import install_access_log_redaction
from app.api.middleware import BodyGuard, HttpMetrics, InflightLimit, RequestMetrics, RequestSlots
from app.api.auth import KeyCache
from app.api.docs import serve_docs
from app.api.eventhub import EventHub
from app.api.ratelimit import RateLimiter
from app.api.routes import architectures, archive, datasets, downloads, health, jobs, methods
from app.core.config import Settings, get_settings
from app.dashboard import mount_dashboard
from app.core.adb import API_POOL_SIZE, AsyncDatabase
from app.metrics import AppMetrics
from app.storage import ArtifactStore, StorageError, store_from_settings

log = logging.getLogger(__name__)

DESCRIPTION = """Spectra compresses LLMs (GRASP, SoCo, SVD, ASVD, SVD-LLM, ShortGPT) as jobs.

Authenticate with `X-API-Key`. Submit with `POST /v1/jobs`, poll `GET /v1/jobs/{id}`, then download
the files listed by `GET /v1/jobs/{id}/artifacts`. Errors are `{"detail": ...}` saying what to fix."""


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) if parts else "body"


def _message(err: dict[str, Any]) -> str:
    if err.get("type") == "json_invalid":  # FastAPI says only "JSON decode error"
        reason = (err.get("ctx") or {}).get("error", "")
        return f"the request body is not valid JSON ({reason}); send a JSON object" if reason else NOT_JSON
    return str(err.get("msg", "invalid value"))


NOT_JSON = "the request body is not valid UTF-8 JSON; send a JSON object"


def _validation_errors(errors: list[dict[str, Any]]) -> JSONResponse:
    # Keep loc/msg/type (FastAPI's documented shape) plus 'field'; drop 'input', which may echo secrets.
    shaped = [
        {"loc": list(err.get("loc", ())), "field": _field_name(tuple(err.get("loc", ()))),
         "msg": _message(err), "type": err.get("type", "value_error")}
        for err in errors
    ]
    return JSONResponse({"detail": jsonable_encoder(shaped)}, status_code=422)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return _validation_errors(list(exc.errors()))


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # FastAPI's answer to a body that is not even text (bad UTF-8): the same 422 as malformed JSON.
        return _validation_errors([{"loc": ("body",), "msg": NOT_JSON, "type": "json_invalid"}])
    headers = dict(exc.headers or {})
    detail = exc.detail
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; list every documented method.
        allowed = _allowed_methods(request.app, request.url.path)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed on {request.url.path}; use {' or '.join(allowed) or 'another path'}"
    elif exc.status_code == 404 and detail == "Not Found":  # no route matched at all
        detail = f"no endpoint {request.url.path}; the API lives under /v1 (see /docs)"
    return await http_exception_handler(request, StarletteHTTPException(exc.status_code, detail, headers))


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """Only a lost connection is 'unavailable' (503); any other driver error (bad data, a constraint)
    is a bug to see as a 500, not to be retried by clients forever."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return await _database_unavailable(request, exc)
    return await _unexpected(request, exc)


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                        headers={"Retry-After": "5"})


async def _storage_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("artifact store unavailable: %s", exc)
    return JSONResponse({"detail": "the artifact store is unavailable; retry shortly"}, status_code=503,
                        headers={"Retry-After": "5"})


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal error; the server logged it"}, status_code=500)


def _operation_id(route: APIRoute) -> str:
    """'jobs-create_job' style ids, so generated clients get readable method names."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_access_log_redaction()  # again here: the server may have reconfigured logging since
        if (settings.database_url or "").startswith("sqlite"):
            # Embedded mode: the schema is created on first start (cheap and idempotent).
            from app.core.migrations import upgrade_head

            upgrade_head(settings.database_url or "")
        thresholds = gc.get_threshold()
        _freeze_startup_objects()
        try:
            yield
        finally:
            # Back to normal, so a process that goes on after the app (the tests) collects as usual.
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            await app.state.db.dispose()
            await app.state.rate_limiter.close()
            await app.state.event_hub.close()

    install_access_log_redaction()
    app = FastAPI(title="Spectra", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  generate_unique_id_function=_operation_id, docs_url=None, redoc_url=None)
    serve_docs(app)
    app.state.settings = settings
    app.state.store = _lazy_store(settings)
    app.state.db = AsyncDatabase(settings.database_url or "")
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, redis_url=settings.broker_url)
    app.state.metrics = AppMetrics(settings)
    app.state.event_hub = EventHub(settings.broker_url)

    for router in (jobs.router, archive.router, datasets.router, methods.router, architectures.router,
                   downloads.router, health.router):
        app.include_router(router)
    mount_dashboard(app)

    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    for db_error in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(db_error, _database_unavailable)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(StorageError, _storage_unavailable)
    app.add_exception_handler(Exception, _unexpected)

    slots, recorder = RequestSlots(API_POOL_SIZE), RequestMetrics(app.state.metrics)
    if settings.cors_origins:  # closed unless origins are configured
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Content-Type", "Idempotency-Key"])
    # As many requests at once as the async pool has connections (none waits on the pool).
    app.add_middleware(InflightLimit, slots=slots)
    # Outside the slots: a request takes one only once its whole body has arrived (slowloris).
    # A dataset upload is a file plus multipart framing (boundaries, part headers: well under 64 KiB);
    # the route refuses a file over the limit itself, with the exact number.
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes, deadline=settings.body_timeout_seconds,
                       uploads={"/v1/datasets": (settings.dataset_max_bytes + 65536, "SPECTRA_DATASET_MAX_BYTES")})
    app.add_middleware(HttpMetrics, recorder=recorder)
    return app


def _freeze_startup_objects() -> None:
    """Move everything alive after startup (modules, FastAPI's routes and schemas, SQLAlchemy's
    metadata: ~10^5 objects) out of the garbage collector's reach, and collect the young generation
    less often. Requests create only short-lived objects, yet every full collection walked all of
    those: ~100 ms with the event loop stopped, about once a second per process under load, which
    was most of the 64-connection p99 tail (bench/README.md). Frozen objects are still freed by
    reference counting; only cycles among them wait for a process restart."""
    gc.collect()
    gc.freeze()
    # Generation 0 every 20000 allocations instead of 700: one collection per ~30 requests, not
    # one per request (+11% GET throughput at 64 connections, bench/README.md).
    gc.set_threshold(20_000, 20, 100)


def _lazy_store(settings: Settings) -> Callable[[], ArtifactStore]:
    """Build the store on first use, so a misconfigured store fails readiness, not startup."""

    @lru_cache(maxsize=1)
    def store() -> ArtifactStore:
        return store_from_settings(settings)

    return store


def __getattr__(name: str) -> Any:
    # `uvicorn app.main:app` without --factory: build the app from the environment on first access.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
