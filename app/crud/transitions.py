"""The one owner of job status changes. Every change of `jobs.status` (API, worker, sweeper) goes
through `transition`, which refuses any change that app.jobstates.TRANSITIONS does not allow (a bug,
raised before the database is touched) and makes the change in ONE conditional UPDATE, so two
processes racing on a job cannot both win. Creating a job (queued) is not a change; it is
app.crud.jobs.create_job. tests/service/test_transitions.py checks that nothing else writes a status.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from app.jobstates import TRANSITIONS, JobStatus
from app.models import Job, utcnow


class IllegalTransition(Exception):
    """A code path asked for a status change the transition table forbids."""


def check_allowed(sources: Iterable[JobStatus], target: JobStatus) -> None:
    illegal = sorted(source.value for source in sources if target not in TRANSITIONS[source])
    if illegal:
        raise IllegalTransition(f"{', '.join(illegal)} -> {target.value} is not in app.jobstates.TRANSITIONS")


def transition(
    session: Session, *, job_id: str, sources: Iterable[JobStatus], target: JobStatus,
    where: Iterable[ColumnElement[bool]] = (), values: dict[str, Any] | None = None, now: datetime | None = None,
) -> bool:
    """Move the job from one of `sources` to `target` where `where` also holds; True if it moved.
    `values` are the other columns written with it (updated_at defaults to now)."""
    sources = frozenset(sources)
    check_allowed(sources, target)
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(sorted(s.value for s in sources)), *where)
        .values(**{"updated_at": now or utcnow(), **(values or {}), "status": target.value})
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1
