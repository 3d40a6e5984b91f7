"""GET /v1/jobs/{id}/archive: the whole artifact as one streamed .tar; .../archive.sha256 its digest.

Streamed member by member from the store (a local file or an S3 object at a time, read in chunks),
never held in memory. The sha256 and length go in the headers up front: the worker hashed the same
deterministic byte stream at publish time (app.storage.archive) and stored both in the job's metrics.
A header rather than only a trailer or a digest computed on request: a digest computed while
streaming would arrive after the body (HTTP trailers, which curl and most clients ignore), and one
computed on request would read the whole artifact twice. The sidecar serves the same stored value
as a `sha256sum -c` line for tools that do not show headers.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import PlainTextResponse, StreamingResponse
from sqlalchemy import select

from app.api.deps import AUTH_RESPONSES, DbDep, StoreDep, TenantDep
from app.api.validation import JOB_ID
from app.jobstates import JobStatus
from app.models import Artifact, Job
from app.schemas import ErrorOut
from app.storage import ArtifactStore
from app.storage.archive import Member, archive_root, tar_size, tar_stream

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTH_RESPONSES)

RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such job for this tenant"},
    409: {"model": ErrorOut, "description": "The job has no artifact (not succeeded)"},
}


@dataclass(frozen=True)
class _Archive:
    root: str
    rows: list[Any]  # (name, size, storage_key), sorted by name
    mtime: int
    sha256: str | None  # None for jobs published before archives were hashed
    size: int


async def _archive_of(db: DbDep, job_id: str, tenant_id: int) -> _Archive:
    if not JOB_ID.fullmatch(job_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id[:64]} not found")
    async with db.session() as session:
        job = (await session.execute(select(Job.status, Job.metrics, Job.finished_at)
                                     .where(Job.id == job_id, Job.tenant_id == tenant_id))).first()
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id[:64]} not found")
        rows = list((await session.execute(select(Artifact.name, Artifact.size, Artifact.storage_key)
                                           .where(Artifact.job_id == job_id).order_by(Artifact.name))).all())
    if job.status != JobStatus.SUCCEEDED.value or not rows:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is {job.status} and has no artifact; the "
                            "archive exists once the job has succeeded (poll GET /v1/jobs/{id})")
    recorded = (job.metrics or {}).get("archive") or {}
    mtime = int(recorded.get("mtime") or job.finished_at.timestamp())
    root = archive_root(job_id)
    size = tar_size(root, [(r.name, r.size) for r in rows], mtime)
    if recorded.get("bytes") not in (None, size):  # a row changed after publishing: never send a wrong digest
        recorded = {}
    return _Archive(root, rows, mtime, recorded.get("sha256"), size)


def _members(store: ArtifactStore, rows: list[Any]) -> list[Member]:
    return [Member(r.name, r.size, lambda key=r.storage_key: store.stream(key)) for r in rows]


@router.get(
    "/{job_id}/archive", response_class=StreamingResponse,
    responses={**RESPONSES, 200: {"content": {"application/x-tar": {}},
                                  "description": "The artifact folder as spectra-{id}/... in one tar"}},
    summary="Download the whole artifact as one .tar",
    description="Unpacks to one folder `spectra-{id}/` that transformers loads. `X-Archive-SHA256` (and "
    "`Repr-Digest`) carry the tar's sha256, computed once when the job was published; "
    "`GET .../archive.sha256` gives it as a `sha256sum -c` line. Members equal the files of "
    "`GET .../artifacts`, hash for hash.",
)
async def get_archive(job_id: str, tenant: TenantDep, db: DbDep, store: StoreDep) -> StreamingResponse:
    archive = await _archive_of(db, job_id, tenant.id)
    headers = {"Content-Length": str(archive.size), "Cache-Control": "private, no-store",
               "Content-Disposition": f'attachment; filename="{archive.root}.tar"'}
    if archive.sha256:
        headers["X-Archive-SHA256"] = archive.sha256
        headers["Repr-Digest"] = f"sha-256=:{base64.b64encode(bytes.fromhex(archive.sha256)).decode()}:"
    # A sync iterator: Starlette reads it on a worker thread, so blocking store reads stay off the loop.
    body = tar_stream(archive.root, _members(store, archive.rows), archive.mtime)
    return StreamingResponse(body, media_type="application/x-tar", headers=headers)


@router.get(
    # No response_class: the errors are JSON like everywhere else; only the 200 is text.
    "/{job_id}/archive.sha256", response_model=None,
    responses={**RESPONSES, 200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                  "description": "`<sha256>  spectra-{id}.tar`"}},
    summary="The archive's sha256 as a `sha256sum -c` line",
)
async def get_archive_digest(job_id: str, tenant: TenantDep, db: DbDep) -> PlainTextResponse:
    archive = await _archive_of(db, job_id, tenant.id)
    if not archive.sha256:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} was published before archive digests "
                            "were recorded; hash the download itself")
    return PlainTextResponse(f"{archive.sha256}  {archive.root}.tar\n")
