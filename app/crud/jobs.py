"""Jobs as the API sees them: create, read, list (keyset pages), events, artifacts, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.crud.transitions import transition
from app.jobstates import EventKind, JobStatus
from app.models import Artifact, Job, JobEvent, Tenant, utcnow


class JobStateConflict(Exception):
    """The job is in a state that does not allow the requested change (the message says which)."""


def create_job(
    session: Session, *, tenant_id: int, spec: dict[str, Any], estimate: dict[str, Any] | None = None,
    idempotency_key: str | None = None, request_hash: str | None = None,
) -> Job:
    """Insert a queued job from a validated JobSpec dump (spec = JobSpec.model_dump(mode='json')) and its
    preflight estimate (None: the worker computes it)."""
    job = Job(
        tenant_id=tenant_id, status=JobStatus.QUEUED.value, method=spec["method"], model=spec["model"],
        revision=spec.get("revision"), target_ratio=spec["target_ratio"], spec=spec, estimate=estimate,
        idempotency_key=idempotency_key, request_hash=request_hash, attempts=0, cancel_requested=False,
    )
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, kind=EventKind.STATE.value, message="queued", data={"status": "queued"}))
    session.flush()
    return job


def get_job_by_idempotency_key(session: Session, *, tenant_id: int, idempotency_key: str) -> Job | None:
    return session.scalar(
        select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key)
    )


def get_job(session: Session, *, job_id: str, tenant_id: int | None = None) -> Job | None:
    """The job, or None. The API always passes tenant_id; tenant_id=None is for the worker only."""
    query = select(Job).where(Job.id == job_id)
    if tenant_id is not None:
        query = query.where(Job.tenant_id == tenant_id)
    return session.scalar(query.execution_options(populate_existing=True))


@dataclass(frozen=True)
class Cursor:
    """Position after the last item of a page: ordering is (created_at desc, id desc)."""

    created_at: datetime
    job_id: str


def list_jobs(
    session: Session, *, tenant_id: int, status: str | None = None, method: str | None = None,
    limit: int = 50, after: Cursor | None = None,
) -> list[Job]:
    """Newest first. Keyset pagination, so rows inserted meanwhile never shift a later page."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    if method is not None:
        query = query.where(Job.method == method)
    if after is not None:
        query = query.where(
            or_(Job.created_at < after.created_at,
                and_(Job.created_at == after.created_at, Job.id < after.job_id))
        )
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(query))


def list_events(session: Session, *, job_id: str, after_id: int | None = None, limit: int = 1000) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after_id is not None:
        query = query.where(JobEvent.id > after_id)
    return list(session.scalars(query.order_by(JobEvent.id).limit(limit)))


def list_artifacts(session: Session, *, job_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def lock_tenant_for_submission(session: Session, *, tenant_id: int) -> None:
    """Hold the tenant's submission lock until the caller's transaction ends, so that a count of its
    active jobs stays true until this transaction's insert commits (two counts cannot both pass).

    PostgreSQL: a row lock on the tenant. FOR NO KEY UPDATE conflicts with itself but not with the
    FOR KEY SHARE that inserting a job (its foreign key) takes, so other writers are not held up.
    SQLite ignores FOR UPDATE: there a no-op UPDATE starts the write transaction instead (the driver
    issues BEGIN before it), taking the database's single write lock; a concurrent submission then
    waits on busy_timeout and counts only after this one commits. This serializes all writers of
    the file for that short while, which embedded mode does anyway at the insert.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Tenant).where(Tenant.id == tenant_id).values(id=Tenant.id)
                        .execution_options(synchronize_session=False))
    else:
        session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))


def count_active_jobs(session: Session, *, tenant_id: int) -> int:
    active = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
    return int(session.scalar(select(func.count()).where(Job.tenant_id == tenant_id, Job.status.in_(active))) or 0)


def count_jobs_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    counts = {s.value: 0 for s in JobStatus}
    counts.update({status: int(n) for status, n in rows})
    return counts


def add_event(session: Session, *, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> JobEvent:
    event = JobEvent(job_id=job_id, kind=EventKind(kind).value, message=message[:4000], data=data)
    session.add(event)
    session.flush()
    return event


def request_cancel(session: Session, *, job_id: str, tenant_id: int) -> Job | None:
    """queued -> cancelled now; running -> cancel_requested (the worker stops between layers).

    Returns None when the job does not exist for this tenant; raises JobStateConflict when terminal.
    """
    job = get_job(session, job_id=job_id, tenant_id=tenant_id)
    if job is None:
        return None
    now = utcnow()
    if transition(session, job_id=job_id, sources=[JobStatus.QUEUED], target=JobStatus.CANCELLED, now=now,
                  values={"cancel_requested": True, "finished_at": now, "error_code": "cancelled",
                          "error_message": "cancelled by the user before it started"}):
        add_event(session, job_id=job_id, kind="state", message="cancelled before it started",
                  data={"status": "cancelled"})
        return get_job(session, job_id=job_id, tenant_id=tenant_id)
    running = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if running.rowcount == 1:
        add_event(session, job_id=job_id, kind="message", message="cancel requested; stopping at the next layer")
        return get_job(session, job_id=job_id, tenant_id=tenant_id)
    job = get_job(session, job_id=job_id, tenant_id=tenant_id)
    assert job is not None
    raise JobStateConflict(f"job {job_id} is already {job.status}; only queued or running jobs can be cancelled")


def job_ids_with_status(session: Session, *, statuses: Sequence[str], limit: int = 1000) -> list[str]:
    return list(session.scalars(select(Job.id).where(Job.status.in_(list(statuses))).limit(limit)))
