"""The worker's side of the preflight estimate: computed before any weight when the API had none, stored
on the job with an event, and a job that fits no execution mode fails with does_not_fit and the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from compression.errors import DoesNotFit
from tests.conftest import SHARED
from tests.service.support.client import FAST_JOB
from tests.service.support.infra import fresh_postgres_database

pytestmark = pytest.mark.integration


def _queued_job(database_url: str, spec: dict[str, Any]) -> str:
    from app import crud
    from app.core.db import session_scope

    with session_scope(database_url) as session:
        tenant = crud.get_or_create_tenant(session, name="preflight")
        return crud.create_job(session, tenant_id=tenant.id, spec=spec).id


def test_worker_stores_the_estimate_or_fails_the_job_that_cannot_fit() -> None:
    from app.core.config import Settings
    from app.core.db import session_scope
    from app.models import Job, JobEvent
    from compression.run import RunSettings
    from compression.specs import JobSpec
    from worker.outcome import classify
    from worker.preflight import store_estimate

    spec = JobSpec.model_validate({**FAST_JOB, "model": "TinyStories-656K", "device": "cpu"})
    roots = (SHARED / "models",)
    with fresh_postgres_database() as url:
        settings = Settings(database_url=url, broker_url="memory://")
        job_id = _queued_job(url, spec.model_dump(mode="json"))
        store_estimate(settings, job_id=job_id, spec=spec,
                       run_settings=RunSettings(data_dir=Path("."), model_roots=roots))
        with session_scope(url) as session:
            row = session.scalar(select(Job).where(Job.id == job_id))
            events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        assert row.estimate["params"] == 656_000 and row.estimate["chosen"] == "resident"
        assert any(e.startswith("preflight estimate: resident: device") for e in events)

        with pytest.raises(DoesNotFit) as refused:
            store_estimate(settings, job_id=job_id, spec=spec,
                           run_settings=RunSettings(data_dir=Path("."), model_roots=roots, host_memory_limit=2**24))
    failure = classify(refused.value)
    assert failure.code == "does_not_fit" and not failure.retry and "host 16.0 MiB" in failure.message
