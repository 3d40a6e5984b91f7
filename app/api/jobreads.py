"""The hot reads of /v1/jobs, answered as JSON bytes: Core queries, no ORM objects, no session.

Same filters and order as app.crud.jobs.get_job / list_jobs (the worker and the other routes keep
using those). On PostgreSQL the database writes each job's JobOut JSON (app.api.jobjson.JOB_JSON_SQL);
on SQLite the rows carry JobOut's columns and app.api.jobjson.job_json writes it.
Statements are built once with bind parameters: SQLAlchemy then computes their cache key once,
not per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import ARRAY, Select, String, and_, any_, bindparam, literal_column, or_, select

from app.api.jobcache import Page, RenderedJobs, RenderedPages
from app.api.jobjson import JOB_JSON_SQL, dumps, job_json
from app.api.validation import JOB_ID, encode_cursor
from app.core.adb import AsyncDatabase
from app.crud import Cursor
from app.models import Job

_JOBS = Job.__table__
# What JobOut shows, nothing more (not worker, heartbeat_at, idempotency_key, request_hash).
_SHOWN = [_JOBS.c[name] for name in (
    "id", "status", "model", "revision", "method", "target_ratio", "spec", "progress_stage", "progress_fraction",
    "progress_message", "progress_stage_fraction", "progress_layer", "progress_layers", "progress_eta_seconds",
    "metrics", "estimate", "error_code", "error_message", "attempts", "cancel_requested", "created_at",
    "started_at", "finished_at", "updated_at",
)]
_ONE = select(*_SHOWN).where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.tenant_id == bindparam("tenant_id"))
# PostgreSQL writes the JSON itself (app.api.jobjson.JOB_JSON_SQL); the page also needs the keyset.
_BODY = literal_column(JOB_JSON_SQL).label("body")
_ONE_BODY = select(_BODY).where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.tenant_id == bindparam("tenant_id"))


def plausible_id(job_id: str) -> bool:
    """Whether the id could exist at all; one that cannot is a 404 without a query."""
    return JOB_ID.fullmatch(job_id) is not None


def not_found(job_id: str) -> HTTPException:
    """The 404 of every /v1/jobs/{id} route; the id is cut to 64 characters (it may be 10 kB)."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id[:64]} not found")


async def job_or_404(db: AsyncDatabase, *, job_id: str, tenant_id: int) -> bytes:
    """JobOut's JSON of this tenant's job; another tenant's job is as absent as one that never was."""
    if not plausible_id(job_id):
        rows: Sequence[Any] = []
    elif db.is_sqlite:
        rows = [dumps(job_json(row)) for row in await db.read(_ONE, {"job_id": job_id, "tenant_id": tenant_id})]
    else:
        rows = [row.body.encode() for row in await db.read(_ONE_BODY, {"job_id": job_id, "tenant_id": tenant_id})]
    if not rows:
        raise not_found(job_id)
    return rows[0]


# A page on PostgreSQL: ids and row versions first (app.api.jobcache), then the JSON of those not cached.
_VERSION = literal_column("xmin::text").label("version")
_BODIES = select(_JOBS.c.id, _VERSION, _BODY).where(
    _JOBS.c.tenant_id == bindparam("tenant_id"), _JOBS.c.id == any_(bindparam("ids", type_=ARRAY(String))))
RENDERED = RenderedJobs()  # per process; shared by the apps of a process (job ids are unique uuid4s)
PAGES = RenderedPages()  # per process, like RENDERED


@lru_cache(maxsize=16)
def _page_query(by_status: bool, by_method: bool, after: bool, versions: bool) -> Select[Any]:
    shown = [_JOBS.c.id, _VERSION, _JOBS.c.created_at] if versions else _SHOWN
    query = select(*shown).where(_JOBS.c.tenant_id == bindparam("tenant_id"))
    if by_status:
        query = query.where(_JOBS.c.status == bindparam("status"))
    if by_method:
        query = query.where(_JOBS.c.method == bindparam("method"))
    if after:
        created, job_id = bindparam("after_created", type_=_JOBS.c.created_at.type), bindparam("after_id")
        query = query.where(or_(_JOBS.c.created_at < created, and_(_JOBS.c.created_at == created, _JOBS.c.id < job_id)))
    return query.order_by(_JOBS.c.created_at.desc(), _JOBS.c.id.desc()).limit(bindparam("limit", literal_execute=False))


async def job_page(
    db: AsyncDatabase, *, tenant_id: int, status: str | None, method: str | None, limit: int, after: Cursor | None,
) -> Page:
    """JobPage's JSON, newest first. Keyset pagination, so rows inserted meanwhile never shift a later
    page; one row more than asked for tells whether a next page exists."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "status": status, "method": method, "limit": limit + 1}
    if after is not None:
        params.update(after_created=after.created_at, after_id=after.job_id)
    query = _page_query(status is not None, method is not None, after is not None, not db.is_sqlite)
    rows = await db.read(query, params)
    if db.is_sqlite:
        page, next_cursor = _split(rows, limit)
        return Page(dumps({"items": [job_json(row) for row in page], "next_cursor": next_cursor}))
    # The bytes follow from the rows alone (ids are uuid4s; each text is its job's at that version),
    # so an unchanged list is answered as it was last assembled.
    key = (tenant_id, status, method, limit, after)
    kept = PAGES.get(key, rows)
    if kept is None:
        page, next_cursor = _split(rows, limit)
        items = await _rendered(db, tenant_id, page)
        kept = Page(f'{{"items":[{",".join(items)}],"next_cursor":{dumps(next_cursor).decode()}}}'.encode())
        PAGES.put(key, rows, kept)
    return kept


def _split(rows: Sequence[Any], limit: int) -> tuple[Sequence[Any], str | None]:
    """The page's rows and the cursor of the next page (None on the last page)."""
    page, more = rows[:limit], len(rows) > limit
    return page, encode_cursor(page[-1].created_at, page[-1].id) if more and page else None


async def _rendered(db: AsyncDatabase, tenant_id: int, page: Sequence[Any]) -> list[str]:
    """The JSON texts of a page's jobs, in its order: cached where the version matches, else rendered.
    A job rendered here may be newer than the version the page read (updated in between): it is
    shown as it is now, and cached under its own version. One deleted in between is left out."""
    texts = {row.id: RENDERED.get(row.id, row.version) for row in page}
    stale = [job_id for job_id, text in texts.items() if text is None]
    if stale:
        for row in await db.read(_BODIES, {"tenant_id": tenant_id, "ids": stale}):
            RENDERED.put(row.id, row.version, row.body)
            texts[row.id] = row.body
    return [text for text in texts.values() if text is not None]
