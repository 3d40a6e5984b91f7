"""What a tenant may still submit: active jobs, submissions per minute, GPU-seconds per day.

All three are counted from the job rows, so cancelling cannot get around them: a cancelled job no
longer holds capacity (it is not active, and its leftover message costs the worker nothing), but it
still counts as a submission, and the time a job ran still counts against the day's budget.
Callers hold the tenant's submission lock (app.crud.jobs.lock_tenant_for_submission) so that two
concurrent submissions cannot both pass on the same count.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.crud.jobs import count_active_jobs
from app.jobstates import JobStatus
from app.models import Job, Tenant, utcnow

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Limits:
    """0 means unlimited."""

    max_active_jobs: int = 0
    submissions_per_minute: int = 0
    daily_gpu_seconds: int = 0

    def any(self) -> bool:
        return bool(self.max_active_jobs or self.submissions_per_minute or self.daily_gpu_seconds)


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_after_seconds: int


def tenant_limits(tenant: Tenant, defaults: Limits) -> Limits:
    """The tenant's own limits where `spectra admin set-tenant` set them, else the service's."""
    def pick(own: int | None, default: int) -> int:
        return default if own is None else own

    return Limits(max_active_jobs=pick(tenant.max_active_jobs, defaults.max_active_jobs),
                  submissions_per_minute=pick(tenant.submissions_per_minute, defaults.submissions_per_minute),
                  daily_gpu_seconds=pick(tenant.daily_gpu_seconds, defaults.daily_gpu_seconds))


def gpu_seconds_last_day(session: Session, *, tenant_id: int) -> float:
    """Seconds the tenant's jobs held a worker (one GPU each) in the last 24 hours, running ones included."""
    now = utcnow()
    since = now - DAY
    rows = session.execute(
        select(Job.started_at, Job.finished_at).where(
            Job.tenant_id == tenant_id, Job.started_at.is_not(None),
            or_(Job.finished_at >= since, Job.status == JobStatus.RUNNING.value))
    ).all()
    total = 0.0
    for started, finished in rows:
        begin, end = max(started, since), (finished or now)
        total += max(0.0, (end - begin).total_seconds())
    return total


def submission_refusal(session: Session, *, tenant_id: int, limits: Limits) -> Refusal | None:
    """Why the tenant may not submit a job now (with when to try again), or None."""
    if limits.max_active_jobs:
        active = count_active_jobs(session, tenant_id=tenant_id)
        if active >= limits.max_active_jobs:
            return Refusal(f"this tenant already has {active} queued or running jobs (its limit is "
                           f"{limits.max_active_jobs}); wait for one to finish or cancel one, then submit again", 30)
    if limits.submissions_per_minute:
        recent = int(session.scalar(select(func.count()).where(
            Job.tenant_id == tenant_id, Job.created_at >= utcnow() - timedelta(minutes=1))) or 0)
        if recent >= limits.submissions_per_minute:
            return Refusal(f"this tenant submitted {recent} jobs in the last minute (its limit is "
                           f"{limits.submissions_per_minute} per minute, cancelled jobs included); "
                           "submit again in a minute", 60)
    if limits.daily_gpu_seconds:
        used = gpu_seconds_last_day(session, tenant_id=tenant_id)
        if used >= limits.daily_gpu_seconds:
            return Refusal(f"this tenant's jobs used {used:.0f} GPU-seconds in the last 24 hours (its daily "
                           f"budget is {limits.daily_gpu_seconds}); submit again when older jobs leave the "
                           "24-hour window", 3600)
    return None


def model_allowed(model: str, patterns: list[str]) -> bool:
    """Whether a model ref matches the tenant's allow-list (shell patterns; empty = everything)."""
    return not patterns or any(fnmatchcase(model, pattern) for pattern in patterns)
