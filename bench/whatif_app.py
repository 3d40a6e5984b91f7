"""A prototype of the API change the load benchmark suggests, served from outside app/ so the same
benchmark can measure it: `bench/api_load.py --app bench.whatif_app:create_app`. Not for production
(it patches app.core.db's private engine table); the real change belongs in app/ (bench/README.md).

Today a `GET /v1/jobs/{id}` makes five threadpool hops: get_session enter, current_tenant, the endpoint,
response validation (FastAPI validates a sync endpoint's result in the threadpool too), get_session exit.
Each hop is a queue put, a thread wake-up and two GIL hand-overs, and the request keeps its DB connection
from current_tenant until the exit. Here the three benchmarked routes are `async def` and do all their
blocking work in ONE hop that opens, uses and closes its own session:
- no connection is held while waiting for a thread, so pool and threadpool cannot deadlock (today at
  ~70 requests in flight per process, 40 threads wait for 30 connections held by requests that wait
  for a thread: everything stalls until pool_timeout);
- API key -> tenant id is cached for AUTH_CACHE_SECONDS per process (saves 2 queries; a revoked key
  keeps working that long at most);
- THREADS worker threads (anyio's default is 40) and a pool of as many connections, no overflow:
  more threads than cores only queue for the GIL, and overflow connections were opened and closed
  again under load.
Same status codes and bodies as app/api/routes/jobs.py; the other routes are untouched.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import crud
from app.api.deps import api_key_header
from app.api.ratelimit import RateLimiter
from app.api.routes.jobs import _accepted, _replay, _request_hash
from app.api.validation import check_allowed_paths, decode_cursor, encode_cursor
from app.core import db
from app.core.config import Settings, get_settings
from app.jobstates import JobStatus
from app.main import create_app as create_base_app
from app.queue import enqueue_compress
from app.schemas import JobOut, JobPage
from app.security import hash_api_key, looks_like_api_key
from compression.specs import JobSpec, Method

log = logging.getLogger(__name__)
THREADS = int(os.environ.get("WHATIF_THREADS", "16"))
AUTH_CACHE_SECONDS = 5.0
_UNAUTHORIZED = {"WWW-Authenticate": "ApiKey"}
KeyDep = Annotated[str | None, Depends(api_key_header)]


def _tenant_id(session: Session, state: Any, key: str | None) -> int:
    """The key's tenant id (cached), after the per-key rate limit; raises 401/429 like current_tenant."""
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key: send it in the X-API-Key header",
                            headers=_UNAUTHORIZED)
    digest = hash_api_key(key)
    now = time.monotonic()
    hit = state.tenant_cache.get(digest)
    if hit is None or hit[0] < now:
        tenant = crud.authenticate(session, key=key) if looks_like_api_key(key) else None
        hit = state.tenant_cache[digest] = (now + AUTH_CACHE_SECONDS, tenant.id if tenant else None)
    if hit[1] is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key in X-API-Key",
                            headers=_UNAUTHORIZED)
    limiter: RateLimiter = state.rate_limiter
    retry_after = limiter.hit(digest)
    if retry_after is not None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"rate limit of {limiter.per_minute} requests per minute for this API key exceeded; "
                            f"retry after {retry_after} s", headers={"Retry-After": str(retry_after)})
    return int(hit[1])


router = APIRouter(prefix="/v1/jobs")


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: str, request: Request, key: KeyDep) -> JobOut:
    def work() -> JobOut:
        with request.app.state.session_factory() as session:
            tenant_id = _tenant_id(session, request.app.state, key)
            job = crud.get_job(session, job_id=job_id, tenant_id=tenant_id) if len(job_id) <= 64 else None
            if job is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id[:64]} not found")
            return JobOut.from_row(job)

    return await run_in_threadpool(work)


@router.get("", response_model=JobPage)
async def list_jobs(
    request: Request, key: KeyDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None, method: Method | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    def work() -> JobPage:
        with request.app.state.session_factory() as session:
            tenant_id = _tenant_id(session, request.app.state, key)
            after = decode_cursor(cursor) if cursor else None
            rows = crud.list_jobs(session, tenant_id=tenant_id, status=status_filter.value if status_filter else None,
                                  method=method.value if method else None, limit=limit + 1, after=after)
            page, more = rows[:limit], len(rows) > limit
            next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more and page else None
            return JobPage(items=[JobOut.from_row(j) for j in page], next_cursor=next_cursor)

    return await run_in_threadpool(work)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
async def create_job(
    spec: JobSpec, request: Request, key: KeyDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")] = None,
) -> JSONResponse:
    settings: Settings = request.app.state.settings

    def work() -> JSONResponse:
        with request.app.state.session_factory() as session:
            tenant_id = _tenant_id(session, request.app.state, key)
            check_allowed_paths(spec, settings)
            request_hash = _request_hash(spec)
            if idempotency_key is not None:
                existing = crud.get_job_by_idempotency_key(session, tenant_id=tenant_id,
                                                           idempotency_key=idempotency_key)
                if existing is not None:
                    return _replay(existing, request_hash)
            try:
                job = crud.create_job(session, tenant_id=tenant_id, spec=spec.model_dump(mode="json"),
                                      idempotency_key=idempotency_key, request_hash=request_hash)
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = crud.get_job_by_idempotency_key(session, tenant_id=tenant_id,
                                                           idempotency_key=idempotency_key or "")
                if existing is None:
                    raise
                return _replay(existing, request_hash)
            out = JobOut.from_row(job)
            try:
                enqueue_compress(settings, job.id)
            except Exception as exc:
                log.warning("enqueue of job %s failed: %s", job.id, exc)
                session.delete(job)
                session.commit()
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the job queue (broker) is unreachable; "
                                    "nothing was submitted, retry later") from exc
            return _accepted(out, replayed=False)

    return await run_in_threadpool(work)


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
    app.state.session_factory = db.session_factory(settings.database_url or "")
    app.state.tenant_cache = {}
    before = len(app.router.routes)
    app.include_router(router)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added  # first match wins: these shadow the original three routes
    base_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        async with base_lifespan(target) as state:
            yield state

    app.router.lifespan_context = lifespan
    return app
