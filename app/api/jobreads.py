"""The hot reads of /v1/jobs as Core queries on the async engine (no ORM objects, no session).

Same filters and order as app.crud.jobs.get_job / list_jobs (the worker and the other routes keep
using those); the rows carry the jobs table's columns, which app.api.jobjson turns into JobOut JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, and_, or_, select

from app.core.adb import AsyncDatabase
from app.crud import Cursor
from app.models import Job

_JOBS = Job.__table__
# What JobOut shows, nothing more (not worker, heartbeat_at, idempotency_key, request_hash).
_SHOWN = [_JOBS.c[name] for name in (
    "id", "status", "model", "revision", "method", "target_ratio", "spec", "progress_stage", "progress_fraction",
    "progress_message", "metrics", "error_code", "error_message", "attempts", "cancel_requested", "created_at",
    "started_at", "finished_at", "updated_at",
)]


async def get_job_row(db: AsyncDatabase, *, job_id: str, tenant_id: int) -> Row | None:  # type: ignore[type-arg]
    query = select(*_SHOWN).where(_JOBS.c.id == job_id, _JOBS.c.tenant_id == tenant_id)
    async with db.connect() as conn:
        return (await conn.execute(query)).first()


async def list_job_rows(
    db: AsyncDatabase, *, tenant_id: int, status: str | None, method: str | None, limit: int, after: Cursor | None,
) -> Sequence[Row]:  # type: ignore[type-arg]
    """Newest first. Keyset pagination, so rows inserted meanwhile never shift a later page."""
    query = select(*_SHOWN).where(_JOBS.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(_JOBS.c.status == status)
    if method is not None:
        query = query.where(_JOBS.c.method == method)
    if after is not None:
        query = query.where(or_(_JOBS.c.created_at < after.created_at,
                                and_(_JOBS.c.created_at == after.created_at, _JOBS.c.id < after.job_id)))
    query = query.order_by(_JOBS.c.created_at.desc(), _JOBS.c.id.desc()).limit(limit)
    async with db.connect() as conn:
        return (await conn.execute(query)).all()
