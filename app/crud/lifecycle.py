"""The worker's and the sweeper's side of a job: claim, heartbeat, progress, finish, re-queue.

Each state change is ONE conditional UPDATE, so two processes racing on a job cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.crud.jobs import add_event, get_job
from app.crud.transitions import transition
from app.jobstates import ACTIVE, TERMINAL, TRANSITIONS, EventKind, JobStatus
from app.models import Artifact, Job, JobEvent, utcnow


class StoredFileLike(Protocol):
    name: str
    size: int
    sha256: str
    key: str


def _seconds(value: float | timedelta) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


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
        Job.cancel_requested.is_(False),
        or_(Job.status == JobStatus.QUEUED.value, Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
    ]
    if max_attempts is not None:
        conditions.append(Job.attempts < max_attempts)
    claimed = transition(session, job_id=job_id, sources=ACTIVE, target=JobStatus.RUNNING, where=conditions, now=now,
                         values={"attempts": Job.attempts + 1, "started_at": func.coalesce(Job.started_at, now),
                                 "worker": worker, "heartbeat_at": now})
    if not claimed:
        if max_attempts is not None:
            _fail_exhausted(session, job_id=job_id, cutoff=cutoff, max_attempts=max_attempts)
        return None
    job = get_job(session, job_id=job_id)
    assert job is not None
    # The tenant reads events: the worker's host and pid stay in the row (job.worker), for the operator.
    session.add(JobEvent(job_id=job_id, kind=EventKind.STATE.value, message=f"running (attempt {job.attempts})",
                         data={"status": "running", "attempt": job.attempts}))
    session.flush()
    return job


def _fail_exhausted(session: Session, *, job_id: str, cutoff: datetime, max_attempts: int) -> None:
    """A claimable job that has used all its attempts fails now instead of waiting forever."""
    now = utcnow()
    message = f"gave up after {max_attempts} attempts (SPECTRA_MAX_ATTEMPTS)"
    failed = transition(
        session, job_id=job_id, sources=ACTIVE, target=JobStatus.FAILED, now=now,
        where=[Job.attempts >= max_attempts, Job.cancel_requested.is_(False),
               or_(Job.status == JobStatus.QUEUED.value, Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)],
        values={"finished_at": now, "error_code": "max_attempts", "error_message": message})
    if failed:
        add_event(session, job_id=job_id, kind="error", message=message, data={"status": "failed"})


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
    overall_fraction: float | None = None, layer: int | None = None, layers: int | None = None,
    eta_seconds: float | None = None,
) -> None:
    """fraction: of the current stage; overall_fraction: of the whole job; layer/layers: layers done of all."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
        .values(progress_stage=stage, progress_fraction=fraction,
                progress_message=(message or "")[:4000] or None, progress_overall_fraction=overall_fraction,
                progress_layer=layer, progress_layers=layers, progress_eta_seconds=eta_seconds, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def set_estimate(session: Session, *, job_id: str, estimate: dict[str, Any]) -> None:
    """Store the preflight estimate the worker computed (the API could not read the model's config)."""
    session.execute(
        update(Job).where(Job.id == job_id).values(estimate=estimate, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


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
    conditions = [Job.worker == worker] if worker is not None else []
    values: dict[str, Any] = {"finished_at": now, "error_code": error_code, "error_message": error_message}
    if metrics is not None:
        values["metrics"] = metrics
    if final is JobStatus.SUCCEEDED:
        values.update(progress_fraction=1.0, progress_overall_fraction=1.0, progress_eta_seconds=0.0)
    sources = [state for state in ACTIVE if final in TRANSITIONS[state]]  # succeeded only from running
    if not transition(session, job_id=job_id, sources=sources, target=final, where=conditions, values=values, now=now):
        return False
    for item in artifacts:
        session.add(Artifact(job_id=job_id, name=item.name, size=item.size, sha256=item.sha256, storage_key=item.key))
    message = final.value if not error_message else f"{final.value}: {error_message}"
    session.add(JobEvent(job_id=job_id, kind=(EventKind.ERROR if final is JobStatus.FAILED else EventKind.STATE).value,
                         message=message[:4000], data={"status": final.value, "error_code": error_code}))
    session.flush()
    return True


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
        still_stale = [or_(Job.heartbeat_at < cutoff, Job.heartbeat_at.is_(None))]
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
        target = JobStatus(values.pop("status"))
        if transition(session, job_id=job_id, sources=[JobStatus.RUNNING], target=target, where=still_stale,
                      values=values, now=now):
            add_event(session, job_id=job_id, kind=kind, message=note, data={"status": target.value})
            if target is JobStatus.QUEUED:
                requeued.append(job_id)
    return requeued
