"""Database operations shared by the API, the worker and the sweeper.

Keyword-only, each takes a Session and commits nothing: the caller owns the transaction. State
changes are single conditional UPDATEs so two processes racing on one job cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.jobstates import ACTIVE, TERMINAL, EventKind, JobStatus
from app.models import ApiKey, Artifact, Job, JobEvent, Tenant, utcnow
from app.security import generate_api_key, hash_api_key, key_matches, key_prefix


class JobStateConflict(Exception):
    """The job is in a state that does not allow the requested change (the message says which)."""


class StoredFileLike(Protocol):
    name: str
    size: int
    sha256: str
    key: str


def _seconds(value: float | timedelta) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


# --- tenants and keys -------------------------------------------------------------------------


def get_or_create_tenant(session: Session, *, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(session: Session, *, tenant_name: str) -> tuple[ApiKey, str]:
    """A new key for the tenant (created if needed). The plaintext is returned once, never stored."""
    tenant = get_or_create_tenant(session, name=tenant_name)
    plaintext = generate_api_key()
    row = ApiKey(tenant_id=tenant.id, prefix=key_prefix(plaintext), key_hash=hash_api_key(plaintext))
    session.add(row)
    session.flush()
    return row, plaintext


def authenticate(session: Session, *, key: str) -> Tenant | None:
    """The tenant owning this (unrevoked) key, or None. Lookup by hash, then a constant-time check."""
    digest = hash_api_key(key)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)))
    if row is None or not key_matches(key, row.key_hash):
        return None
    return row.tenant


def revoke_api_key(session: Session, *, prefix: str, tenant_name: str) -> int:
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        return 0
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.tenant_id == tenant.id, ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount or 0


# --- jobs: creation and reads -----------------------------------------------------------------


def create_job(
    session: Session, *, tenant_id: int, spec: dict[str, Any],
    idempotency_key: str | None = None, request_hash: str | None = None,
) -> Job:
    """Insert a queued job from a validated JobSpec dump (spec = JobSpec.model_dump(mode='json'))."""
    job = Job(
        tenant_id=tenant_id, status=JobStatus.QUEUED.value, method=spec["method"], model=spec["model"],
        revision=spec.get("revision"), target_ratio=spec["target_ratio"], spec=spec,
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


def count_jobs_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    counts = {s.value: 0 for s in JobStatus}
    counts.update({status: int(n) for status, n in rows})
    return counts


# --- jobs: worker side -------------------------------------------------------------------------


def claim_job(
    session: Session, *, job_id: str, worker: str, stale_after: float | timedelta,
    max_attempts: int | None = None,
) -> Job | None:
    """Take the job for this worker in ONE conditional UPDATE.

    queued -> running, or running with a heartbeat older than stale_after (its worker died) ->
    running again. Increments attempts. Returns None when the job is terminal, cancel-requested,
    held by a live worker, or (with max_attempts) out of attempts.
    """
    now = utcnow()
    cutoff = now - _seconds(stale_after)
    conditions = [
        Job.id == job_id,
        Job.cancel_requested.is_(False),
        or_(
            Job.status == JobStatus.QUEUED.value,
            and_(Job.status == JobStatus.RUNNING.value,
                 or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)),
        ),
    ]
    if max_attempts is not None:
        conditions.append(Job.attempts < max_attempts)
    result = session.execute(
        update(Job).where(*conditions).values(
            status=JobStatus.RUNNING.value, attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now), worker=worker, heartbeat_at=now, updated_at=now,
        ).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    job = get_job(session, job_id=job_id)
    assert job is not None
    session.add(JobEvent(job_id=job_id, kind=EventKind.STATE.value, message=f"running on {worker}",
                         data={"status": "running", "worker": worker, "attempt": job.attempts}))
    session.flush()
    return job


def heartbeat(session: Session, *, job_id: str, worker: str) -> bool:
    """Refresh the heartbeat; False when this worker no longer owns the running job."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING.value)
        .values(heartbeat_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def is_cancel_requested(session: Session, *, job_id: str) -> bool:
    value = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return bool(value)


def set_progress(
    session: Session, *, job_id: str, stage: str | None, fraction: float | None, message: str | None,
) -> None:
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
        .values(progress_stage=stage, progress_fraction=fraction,
                progress_message=(message or "")[:4000] or None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def add_event(session: Session, *, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> JobEvent:
    event = JobEvent(job_id=job_id, kind=EventKind(kind).value, message=message[:4000], data=data)
    session.add(event)
    session.flush()
    return event


def finish_job(
    session: Session, *, job_id: str, status: str, metrics: dict[str, Any] | None = None,
    error_code: str | None = None, error_message: str | None = None,
    artifacts: Iterable[StoredFileLike] = (), worker: str | None = None,
) -> bool:
    """Move a non-terminal job to a terminal state; artifact rows are written in the same transaction.

    Returns False (and changes nothing) when the job is already terminal or, with worker given,
    when another worker owns it now. Commit after this call to publish job and artifacts together.
    """
    final = JobStatus(status)
    if final not in TERMINAL:
        raise ValueError(f"finish_job needs a terminal status, not {status!r}")
    artifacts = list(artifacts)
    if artifacts and final is not JobStatus.SUCCEEDED:
        raise ValueError("only a succeeded job publishes artifacts")
    now = utcnow()
    conditions = [Job.id == job_id, Job.status.in_([s.value for s in ACTIVE])]
    if worker is not None:
        conditions.append(Job.worker == worker)
    values: dict[str, Any] = {"status": final.value, "finished_at": now, "updated_at": now,
                              "error_code": error_code, "error_message": error_message}
    if metrics is not None:
        values["metrics"] = metrics
    if final is JobStatus.SUCCEEDED:
        values.update(progress_fraction=1.0)
    result = session.execute(update(Job).where(*conditions).values(**values)
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return False
    for item in artifacts:
        session.add(Artifact(job_id=job_id, name=item.name, size=item.size, sha256=item.sha256, storage_key=item.key))
    message = final.value if not error_message else f"{final.value}: {error_message}"
    session.add(JobEvent(job_id=job_id, kind=(EventKind.ERROR if final is JobStatus.FAILED else EventKind.STATE).value,
                         message=message[:4000], data={"status": final.value, "error_code": error_code}))
    session.flush()
    return True


def request_cancel(session: Session, *, job_id: str, tenant_id: int) -> Job | None:
    """queued -> cancelled now; running -> cancel_requested (the worker stops between layers).

    Returns None when the job does not exist for this tenant; raises JobStateConflict when terminal.
    """
    job = get_job(session, job_id=job_id, tenant_id=tenant_id)
    if job is None:
        return None
    now = utcnow()
    queued = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(status=JobStatus.CANCELLED.value, cancel_requested=True, finished_at=now, updated_at=now,
                error_code="cancelled", error_message="cancelled by the user before it started")
        .execution_options(synchronize_session=False)
    )
    if queued.rowcount == 1:
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


def requeue_or_fail_stale(session: Session, *, stale_after: float | timedelta, max_attempts: int) -> list[str]:
    """Running jobs whose worker stopped heartbeating: re-queue them (ids returned for re-enqueueing),
    or fail them once they used max_attempts, or mark them cancelled when a cancel was pending."""
    now = utcnow()
    cutoff = now - _seconds(stale_after)
    stale = session.execute(
        select(Job.id, Job.attempts, Job.cancel_requested).where(
            Job.status == JobStatus.RUNNING.value,
            or_(Job.heartbeat_at < cutoff, and_(Job.heartbeat_at.is_(None), Job.updated_at < cutoff)),
        )
    ).all()
    requeued: list[str] = []
    for job_id, attempts, cancel_requested in stale:
        still_stale = [Job.id == job_id, Job.status == JobStatus.RUNNING.value,
                       or_(Job.heartbeat_at < cutoff, Job.heartbeat_at.is_(None))]
        if cancel_requested:
            values: dict[str, Any] = {"status": JobStatus.CANCELLED.value, "finished_at": now,
                                      "error_code": "cancelled", "error_message": "cancelled; its worker had stopped"}
            note, kind = "cancelled (worker lost while a cancel was pending)", "state"
        elif attempts >= max_attempts:
            values = {"status": JobStatus.FAILED.value, "finished_at": now, "error_code": "worker_lost",
                      "error_message": f"the worker stopped responding {attempts} times (max_attempts="
                                       f"{max_attempts}); giving up"}
            note, kind = values["error_message"], "error"
        else:
            values = {"status": JobStatus.QUEUED.value, "worker": None, "heartbeat_at": None}
            note, kind = f"worker lost after attempt {attempts}; re-queued", "state"
        result = session.execute(update(Job).where(*still_stale).values(updated_at=now, **values)
                                 .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            add_event(session, job_id=job_id, kind=kind, message=note, data={"status": values["status"]})
            if values["status"] == JobStatus.QUEUED.value:
                requeued.append(job_id)
    return requeued


def job_ids_with_status(session: Session, *, statuses: Sequence[str], limit: int = 1000) -> list[str]:
    return list(session.scalars(select(Job.id).where(Job.status.in_(list(statuses))).limit(limit)))
