"""/v1/jobs: create (idempotent per tenant), read, list, cancel, events, artifacts."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import crud
from app.api.datasetrefs import pin_datasets
from app.api.deps import AUTH_RESPONSES, DbDep, SessionDep, SettingsDep, StoreDep, TenantDep
from app.api.validation import JOB_ID, check_allowed_paths, decode_cursor, encode_cursor, field_error
from app.jobstates import JobStatus
from app.models import Artifact, Job
from app.queue import enqueue_compress
from app.schemas import ArtifactOut, ErrorOut, EventOut, JobOut, JobPage
from compression.specs import JobSpec, Method

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTH_RESPONSES)

NOT_FOUND = {404: {"model": ErrorOut, "description": "No such job for this tenant"}}


def _request_hash(dumped: dict[str, Any]) -> str:
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _accepted(job: JobOut, replayed: bool) -> JSONResponse:
    headers = {"Location": job.links.self}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(job.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED, headers=headers)


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
    responses={503: {"model": ErrorOut, "description": "Database or broker unreachable; retry"}},
    summary="Submit a compression job",
    description="Validated by the library's JobSpec (unknown keys refused). With `Idempotency-Key`, "
    "the same key and the same body return the same job; the same key with another body is a 422.",
)
async def create_job(
    spec: JobSpec, tenant: TenantDep, db: DbDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")] = None,
) -> JSONResponse:
    check_allowed_paths(spec, settings)
    dumped = spec.model_dump(mode="json")
    await pin_datasets(db, dumped, tenant.id)
    request_hash = _request_hash(dumped)

    def insert(session: Session) -> tuple[Job, JobOut, bool]:
        """(the job, its JobOut, replayed?): app.crud's sync code, run by the AsyncSession on the event
        loop; JobOut is built in here too, where reading an attribute may still load it."""
        if idempotency_key is not None:
            existing = crud.get_job_by_idempotency_key(session, tenant_id=tenant.id, idempotency_key=idempotency_key)
            if existing is not None:
                return existing, _replayable(existing, request_hash), True
        quota = settings.max_active_jobs_per_tenant
        if quota:
            # Count and insert under the tenant's lock (released by the commit or rollback below):
            # without it, concurrent POSTs all counted the same jobs and together passed the quota.
            crud.lock_tenant_for_submission(session, tenant_id=tenant.id)
        if quota and crud.count_active_jobs(session, tenant_id=tenant.id) >= quota:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                                f"this tenant already has {quota} queued or running jobs (the limit); wait for one "
                                "to finish or cancel one, then submit again", headers={"Retry-After": "30"})
        try:
            job = crud.create_job(session, tenant_id=tenant.id, spec=dumped,
                                  idempotency_key=idempotency_key, request_hash=request_hash)
            session.commit()
        except IntegrityError:  # a concurrent request with the same Idempotency-Key won the insert
            session.rollback()
            existing = crud.get_job_by_idempotency_key(session, tenant_id=tenant.id,
                                                       idempotency_key=idempotency_key or "")
            if existing is None:
                raise
            return existing, _replayable(existing, request_hash), True
        return job, JobOut.from_row(job), False

    async with db.session() as session:
        job, out, replayed = await session.run_sync(insert)
        if replayed:
            return _accepted(out, replayed=True)
        try:
            # Only after the commit, so the worker always finds the row. Celery's publish blocks: one
            # thread hop, and the session holds no connection meanwhile (the commit released it).
            await run_in_threadpool(enqueue_compress, settings, job.id)
        except Exception as exc:  # broker down: withdraw the job so a retry starts clean
            log.warning("enqueue of job %s failed: %s", job.id, exc)
            await session.delete(job)
            await session.commit()
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                "the job queue (broker) is unreachable; nothing was submitted, retry later") from exc
    return _accepted(out, replayed=False)


def _replayable(existing: Job, request_hash: str) -> JobOut:
    """The earlier job, if this is the same request again; a 422 if the key was used for another."""
    if existing.request_hash != request_hash:
        raise field_error(("header", "Idempotency-Key"), "this Idempotency-Key was already used with a different "
                          "request body; use a new key for a new job", "idempotency_key_reused")
    return JobOut.from_row(existing)


def plausible_id(job_id: str) -> bool:
    """Whether the id could exist at all; one that cannot is a 404 without a query (PostgreSQL
    refuses a NUL byte with an error, not an empty result)."""
    return JOB_ID.fullmatch(job_id) is not None


def not_found(job_id: str) -> HTTPException:
    """The 404 of every /v1/jobs/{id} route; the id is cut to 64 characters (it may be 10 kB)."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id[:64]} not found")


async def job_or_404(session: AsyncSession, job_id: str, tenant_id: int) -> Job:
    """This tenant's job; another tenant's job is as absent as one that never was."""
    job = None
    if plausible_id(job_id):
        job = await session.run_sync(lambda s: crud.get_job(s, job_id=job_id, tenant_id=tenant_id))
    if job is None:
        raise not_found(job_id)
    return job


@router.get("", response_model=JobPage, summary="List this tenant's jobs, newest first")
async def list_jobs(
    tenant: TenantDep, session: SessionDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    method: Method | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    include: Annotated[str | None, Query(
        pattern=r"^(spec|metrics)(,(spec|metrics))?$",
        description="Items leave out spec and metrics (a list is for finding jobs; GET /v1/jobs/{id} has "
        "everything): `spec`, `metrics` or `spec,metrics` puts them in.")] = None,
) -> JSONResponse:
    after = decode_cursor(cursor) if cursor else None
    left_out = {"spec", "metrics"} - set((include or "").split(","))
    # One row more than asked for tells whether a next page exists.
    rows = await session.run_sync(lambda s: crud.list_jobs(
        s, tenant_id=tenant.id, status=status_filter.value if status_filter else None,
        method=method.value if method else None, limit=limit + 1, after=after))
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return JSONResponse(JobPage(items=[JobOut.from_row(job) for job in page], next_cursor=next_cursor)
                        .model_dump(mode="json", exclude={"items": {"__all__": left_out}}))


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND, summary="One job with progress and metrics")
async def get_job(job_id: str, tenant: TenantDep, session: SessionDep) -> JSONResponse:
    return JSONResponse(JobOut.from_row(await job_or_404(session, job_id, tenant.id)).model_dump(mode="json"))


@router.post(
    "/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
    responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "The job already finished"}},
    summary="Cancel a job",
    description="A queued job is cancelled at once; a running job gets cancel_requested and stops "
    "between layers (poll until status is cancelled). A finished job answers 409.",
)
async def cancel_job(job_id: str, tenant: TenantDep, session: SessionDep) -> JobOut:
    if not plausible_id(job_id):
        raise not_found(job_id)

    def cancel(s: Session) -> Job | None:
        try:
            job = crud.request_cancel(s, job_id=job_id, tenant_id=tenant.id)
        except crud.JobStateConflict as exc:
            s.rollback()
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        s.commit()
        return job

    job = await session.run_sync(cancel)
    if job is None:
        raise not_found(job_id)
    return JobOut.from_row(job)


@router.get("/{job_id}/events", response_model=list[EventOut], responses=NOT_FOUND,
            summary="The job's log: state changes, stages and messages, oldest first")
async def list_events(
    job_id: str, tenant: TenantDep, session: SessionDep,
    # Event ids are 32-bit integers in the database; a larger bound would reach PostgreSQL as an error.
    after: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="Only events with id > after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> list[EventOut]:
    job = await job_or_404(session, job_id, tenant.id)
    events = await session.run_sync(lambda s: crud.list_events(s, job_id=job.id, after_id=after, limit=limit))
    return [EventOut.from_row(e) for e in events]


@router.get(
    "/{job_id}/artifacts", response_model=list[ArtifactOut], responses=NOT_FOUND,
    summary="Files of a succeeded job with download links",
    description="An empty list until the job has succeeded (artifacts are published together with "
    "the success, never half-uploaded). Links expire after SPECTRA_LINK_TTL_SECONDS.",
)
async def list_artifacts(job_id: str, request: Request, tenant: TenantDep, session: SessionDep,
                         settings: SettingsDep, store: StoreDep) -> list[ArtifactOut]:
    job = await job_or_404(session, job_id, tenant.id)
    artifacts = await session.run_sync(lambda s: crud.list_artifacts(s, job_id=job.id))
    ttl = settings.link_ttl_seconds
    base = str(request.base_url).rstrip("/")

    def link(artifact: Artifact) -> str:
        url = store.url_for(artifact.storage_key, artifact.name.split("/")[-1], ttl)
        return base + url if url.startswith("/") else url  # local links without SPECTRA_PUBLIC_URL

    return [ArtifactOut.from_row(a, link(a), ttl) for a in artifacts]
