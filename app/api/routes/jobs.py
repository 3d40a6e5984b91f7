"""/v1/jobs: create (idempotent per tenant), read, list, cancel, events, artifacts."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import crud
from app.api.conditional import revalidatable
from app.api.datasetrefs import pin_datasets
from app.api.eventstream import job_events
from app.api.deps import AUTH_RESPONSES, DbDep, SessionDep, SettingsDep, StoreDep, TenantDep
from app.api.preflight import submission_estimate
from app.api.validation import (
    JOB_ID, check_allowed_paths, check_model_fits, check_spec_size, decode_cursor, encode_cursor, field_error,
)
from app.jobstates import JobStatus
from app.models import Artifact, Job, Tenant
from app.queue import enqueue_compress
from app.schemas import ArtifactOut, ErrorOut, EventOut, JobOut, JobPage
from compression.specs import JobSpec, Method

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTH_RESPONSES)

SPEC_EXAMPLES = {
    "svd": {"summary": "Plain SVD on TinyStories-656K (seconds on a CPU)",
            "value": {"model": "raincandy-u/TinyStories-656K", "method": "svd", "target_ratio": 0.2,
                      "evaluation": {"corpus": "tinystories", "seq_len": 128, "max_windows": 2}}},
    "grasp": {"summary": "GRASP at 20 % with calibration on WikiText-2",
              "value": {"model": "HuggingFaceTB/SmolLM2-135M", "method": "grasp", "target_ratio": 0.2,
                        "calibration": {"source": "wikitext2", "samples": 32, "seq_len": 256}}},
}
# The poll hint while a job is queued or running: a job takes minutes, and the events stream pushes
# every change as it happens, so a poller gains nothing from asking more often.
POLL_SECONDS = 5
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
    "the same key and the same body return the same job; the same key with another body is a 422. "
    "The preflight estimate (peak device/host memory, disk, time per execution mode) is computed from the "
    "model's config.json and stored as `estimate`; a job that fits the workers' declared memory "
    "(SPECTRA_WORKER_DEVICE_MEMORY / SPECTRA_WORKER_HOST_MEMORY, or the spec's own limits) in no mode is a 422 "
    "(type does_not_fit) whose message gives the numbers.",
)
async def create_job(
    spec: Annotated[JobSpec, Body(openapi_examples=SPEC_EXAMPLES)], tenant: TenantDep, db: DbDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")] = None,
) -> JSONResponse:
    check_allowed_paths(spec, settings)
    # Both read config.json from disk (a model root or the hub cache): off the event loop.
    await run_in_threadpool(check_model_fits, spec, settings)
    estimate = await run_in_threadpool(submission_estimate, spec, settings)
    dumped = spec.model_dump(mode="json")
    check_spec_size(dumped)
    await pin_datasets(db, dumped, tenant.id)
    request_hash = _request_hash(dumped)
    defaults = crud.Limits(max_active_jobs=settings.max_active_jobs_per_tenant,
                           submissions_per_minute=settings.submissions_per_minute_per_tenant,
                           daily_gpu_seconds=settings.daily_gpu_seconds_per_tenant)

    def insert(session: Session) -> tuple[Job, JobOut, bool]:
        """(the job, its JobOut, replayed?): app.crud's sync code, run by the AsyncSession on the event
        loop; JobOut is built in here too, where reading an attribute may still load it."""
        if idempotency_key is not None:
            existing = crud.get_job_by_idempotency_key(session, tenant_id=tenant.id, idempotency_key=idempotency_key)
            if existing is not None:
                return existing, _replayable(existing, request_hash), True
        # Count and insert under the tenant's lock (released by the commit or rollback below): without
        # it, concurrent POSTs all counted the same jobs and together passed the limits.
        crud.lock_tenant_for_submission(session, tenant_id=tenant.id)
        row = session.get(Tenant, tenant.id)
        limits = crud.tenant_limits(row, defaults) if row is not None else defaults
        allowed = row.allowed_models if row is not None and row.allowed_models is not None else settings.allowed_models
        if not crud.model_allowed(spec.model, allowed):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"model '{spec.model}' is not among the models this "
                                "tenant may compress; ask the operator to allow it (spectra admin set-tenant "
                                "--allowed-models)")
        refusal = crud.submission_refusal(session, tenant_id=tenant.id, limits=limits) if limits.any() else None
        if refusal is not None:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, refusal.message,
                                headers={"Retry-After": str(refusal.retry_after_seconds)})
        try:
            job = crud.create_job(session, tenant_id=tenant.id, spec=dumped, estimate=estimate,
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
    request: Request, tenant: TenantDep, session: SessionDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    method: Method | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    include: Annotated[str | None, Query(
        pattern=r"^(spec|metrics|estimate)(,(spec|metrics|estimate)){0,2}$",
        description="Items leave out spec, metrics and estimate (a list is for finding jobs; GET /v1/jobs/{id} "
        "has everything): a comma-separated list of them, e.g. `spec,metrics`, puts them in.")] = None,
) -> JSONResponse:
    after = decode_cursor(cursor) if cursor else None
    left_out = {"spec", "metrics", "estimate"} - set((include or "").split(","))
    # One row more than asked for tells whether a next page exists.
    rows = await session.run_sync(lambda s: crud.list_jobs(
        s, tenant_id=tenant.id, status=status_filter.value if status_filter else None,
        method=method.value if method else None, limit=limit + 1, after=after))
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return revalidatable(request, JobPage(items=[JobOut.from_row(job) for job in page], next_cursor=next_cursor)
                         .model_dump(mode="json", exclude={"items": {"__all__": left_out}}))


@router.get(
    "/{job_id}", response_model=JobOut, responses={**NOT_FOUND, 304: {"description": "Unchanged since If-None-Match"}},
    summary="One job with progress and metrics",
    description="Send the last `ETag` back in `If-None-Match` to get an empty 304 while nothing changed. "
    "While the job is queued or running, `Retry-After` says how many seconds to wait before polling again, "
    "and `Link: <...events>; rel=\"monitor\"` names the Server-Sent Events stream that pushes every change instead.",
)
async def get_job(job_id: str, request: Request, tenant: TenantDep, session: SessionDep) -> Response:
    job = await job_or_404(session, job_id, tenant.id)
    headers = {}
    if not job.is_terminal:
        headers = {"Retry-After": str(POLL_SECONDS), "Link": f'</v1/jobs/{job.id}/events>; rel="monitor"'}
    return revalidatable(request, JobOut.from_row(job).model_dump(mode="json"), headers)


@router.post(
    "/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
    responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "The job already finished"}},
    summary="Cancel a job",
    description="A queued job is cancelled at once; a running job gets cancel_requested and stops "
    "between layers (poll until status is cancelled). A finished job answers 409.",
)
async def cancel_job(job_id: str, request: Request, tenant: TenantDep, session: SessionDep) -> JobOut:
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
    await request.app.state.event_hub.publish(job.id)
    return JobOut.from_row(job)


EVENT_ID = r"^[0-9]{1,10}$"


@router.get(
    "/{job_id}/events", response_model=list[EventOut],
    responses={**NOT_FOUND, 200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                                  "description": "The events (JSON), or their stream (Server-Sent Events)"}},
    summary="The job's log: state changes, stages, progress steps and messages, oldest first",
    description="As JSON, a page of the log. With `Accept: text/event-stream`, a Server-Sent Events stream: "
    "every event as it is committed (`event:` its kind, `id:` its id, data the same JSON as here), then, once "
    "the job has finished, `event: job` with the whole job (status, error, final metrics) and the end of the "
    "stream. Reconnect with `Last-Event-ID` (browsers' EventSource do) to get exactly the events after it.",
)
async def list_events(
    job_id: str, request: Request, tenant: TenantDep, session: SessionDep,
    # Event ids are 32-bit integers in the database; a larger bound would reach PostgreSQL as an error.
    after: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="Only events with id > after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    last_event_id: Annotated[str | None, Header(pattern=EVENT_ID, description="Resume a stream after this event id")] = None,
) -> Response:
    job = await job_or_404(session, job_id, tenant.id)
    if "text/event-stream" in request.headers.get("accept", ""):
        start = int(last_event_id) if last_event_id is not None else (after or 0)
        if start > 2**31 - 1:
            raise field_error(("header", "Last-Event-ID"), "Last-Event-ID is not an event id of this server; "
                              "reconnect without it", "value_error")
        await session.close()  # the stream reads through sessions of its own and holds none while it waits
        state = request.app.state
        return EventSourceResponse(job_events(state.db, state.event_hub, job.id, start),
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    events = await session.run_sync(lambda s: crud.list_events(s, job_id=job.id, after_id=after, limit=limit))
    return JSONResponse([EventOut.from_row(e).model_dump(mode="json") for e in events])


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
    # Local links without SPECTRA_PUBLIC_URL: the embedded default completes them with the URL the request
    # came in on (one machine, one user). Elsewhere the Host header is the client's to choose, so a link
    # built from it could point anywhere: the link stays relative to the API (resolve it against the URL
    # you called), and the operator sets SPECTRA_PUBLIC_URL for absolute links.
    base = str(request.base_url).rstrip("/") if settings.is_embedded_broker else ""

    def link(artifact: Artifact) -> str:
        url = store.url_for(artifact.storage_key, artifact.name.split("/")[-1], ttl, issuer=tenant.key_id or None)
        return base + url if url.startswith("/") else url

    return [ArtifactOut.from_row(a, link(a), ttl) for a in artifacts]
