"""The hot reads of /v1/jobs as Core queries on the async engine (no ORM objects, no session).

Same filters and order as app.crud.jobs.get_job / list_jobs (the worker and the other routes keep
using those); the rows carry JobOut's columns, which app.api.jobjson turns into JobOut JSON.
Statements are built once with bind parameters: SQLAlchemy then computes their cache key once,
not per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam, or_, select

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
_ONE = select(*_SHOWN).where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.tenant_id == bindparam("tenant_id"))


async def get_job_row(db: AsyncDatabase, *, job_id: str, tenant_id: int) -> Row[Any] | None:
    rows = await db.read(_ONE, {"job_id": job_id, "tenant_id": tenant_id})
    return rows[0] if rows else None


@lru_cache(maxsize=8)
def _page_query(by_status: bool, by_method: bool, after: bool) -> Select[Any]:
    query = select(*_SHOWN).where(_JOBS.c.tenant_id == bindparam("tenant_id"))
    if by_status:
        query = query.where(_JOBS.c.status == bindparam("status"))
    if by_method:
        query = query.where(_JOBS.c.method == bindparam("method"))
    if after:
        created, job_id = bindparam("after_created", type_=_JOBS.c.created_at.type), bindparam("after_id")
        query = query.where(or_(_JOBS.c.created_at < created, and_(_JOBS.c.created_at == created, _JOBS.c.id < job_id)))
    return query.order_by(_JOBS.c.created_at.desc(), _JOBS.c.id.desc()).limit(bindparam("limit", literal_execute=False))


async def list_job_rows(
    db: AsyncDatabase, *, tenant_id: int, status: str | None, method: str | None, limit: int, after: Cursor | None,
) -> Sequence[Row[Any]]:
    """Newest first. Keyset pagination, so rows inserted meanwhile never shift a later page."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "status": status, "method": method, "limit": limit}
    if after is not None:
        params.update(after_created=after.created_at, after_id=after.job_id)
    return await db.read(_page_query(status is not None, method is not None, after is not None), params)
