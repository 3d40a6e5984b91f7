"""Which queued job a free worker takes next: fair across tenants, decided in SQL.

A queue message only says "a job was queued"; the worker that receives it claims the job this
module picks, not necessarily the one named in the message. Tenants of a higher priority go first;
among equals, the tenant served longest ago (round robin), then that tenant's oldest job. So a
tenant with a backlog of 100 jobs delays another tenant's next job by at most one job per worker.
Every queued job has at least one message, so every job is claimed; a message left over (its job
cancelled, or claimed through another message) finds nothing and is dropped before it costs a
process (worker/prefilter.py).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from app.crud.lifecycle import claim_job
from app.jobstates import JobStatus
from app.models import Job, Tenant, utcnow

# Each lost race (another worker claimed the picked job first) costs one more pick; bounded anyway.
MAX_PICKS = 16


def _next_queued(session: Session) -> str | None:
    query = (
        select(Job.id).join(Tenant, Tenant.id == Job.tenant_id)
        .where(Job.status == JobStatus.QUEUED.value, Job.cancel_requested.is_(False))
        .order_by(Tenant.priority.desc(), Tenant.last_claimed_at.asc().nulls_first(), Job.created_at, Job.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Two workers picking at once each take a different job instead of queueing on one row lock.
        query = query.with_for_update(skip_locked=True, of=Job)
    return session.scalar(query)


def claim_next_job(session: Session, *, worker: str, stale_after: float | timedelta,
                   max_attempts: int | None = None, hint: str | None = None) -> Job | None:
    """Claim the fairest queued job for this worker (see the module doc), else the hinted job if its
    worker died (a running job with a stale heartbeat); None when there is nothing to do."""
    for _ in range(MAX_PICKS):
        job_id = _next_queued(session)
        if job_id is None:
            break
        job = claim_job(session, job_id=job_id, worker=worker, stale_after=stale_after, max_attempts=max_attempts)
        if job is not None:
            session.execute(update(Tenant).where(Tenant.id == job.tenant_id).values(last_claimed_at=utcnow())
                            .execution_options(synchronize_session=False))
            return job
    if hint is None:
        return None
    return claim_job(session, job_id=hint, worker=worker, stale_after=stale_after, max_attempts=max_attempts)


def has_claimable_job(session: Session, *, hint: str | None, stale_after: float | timedelta) -> bool:
    """Cheap check before a process is spent on a message: would claim_next_job find anything?"""
    cutoff = utcnow() - (stale_after if isinstance(stale_after, timedelta) else timedelta(seconds=stale_after))
    claimable = [and_(Job.status == JobStatus.QUEUED.value, Job.cancel_requested.is_(False))]
    if hint is not None:
        claimable.append(and_(Job.id == hint, Job.status == JobStatus.RUNNING.value, Job.cancel_requested.is_(False),
                              or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)))
    return bool(session.scalar(select(exists().where(or_(*claimable)))))
