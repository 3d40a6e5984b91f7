"""The crud state machine the worker and the sweeper rely on, on PostgreSQL and SQLite:
conditional claims (one winner under concurrency), heartbeat ownership, publish-once, sweeping."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from app import crud
from app.core.db import session_scope
from app.core.migrations import upgrade_head
from app.storage import StoredFile
from tests.service.api_env import job_body, throwaway_postgres


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('crud') / 'crud.db'}"
        upgrade_head(url)
        yield url
        return
    with throwaway_postgres() as url:
        upgrade_head(url)
        yield url


def _new_job(url: str) -> str:
    with session_scope(url) as session:
        tenant = crud.get_or_create_tenant(session, name="crud")
        return crud.create_job(session, tenant_id=tenant.id, spec={**job_body(), "revision": None}).id


def test_only_one_of_many_concurrent_claims_wins(db_url: str) -> None:
    job_id = _new_job(db_url)

    def claim(i: int) -> bool:
        with session_scope(db_url) as session:
            return crud.claim_job(session, job_id=job_id, worker=f"w{i}", stale_after=60) is not None

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(claim, range(8))) == 1
    with session_scope(db_url) as session:
        job = crud.get_job(session, job_id=job_id)
        assert job is not None and job.status == "running" and job.attempts == 1 and job.started_at


def test_stale_claim_heartbeat_ownership_and_publish_once(db_url: str) -> None:
    job_id = _new_job(db_url)
    with session_scope(db_url) as session:
        first = crud.claim_job(session, job_id=job_id, worker="old", stale_after=60)
        assert first is not None and first.attempts == 1
        started = first.started_at
    with session_scope(db_url) as session:  # heartbeat older than stale_after=-1: taken over
        second = crud.claim_job(session, job_id=job_id, worker="new", stale_after=-1)
        assert second is not None and second.attempts == 2 and second.started_at == started
    with session_scope(db_url) as session:
        assert not crud.heartbeat(session, job_id=job_id, worker="old")
        assert crud.heartbeat(session, job_id=job_id, worker="new")
        assert not crud.finish_job(session, job_id=job_id, status="succeeded", worker="old")
        files = [StoredFile("config.json", 2, "ab" * 32, "k/config.json")]
        assert crud.finish_job(session, job_id=job_id, status="succeeded", metrics={"x": 1}, artifacts=files,
                               worker="new")
    with session_scope(db_url) as session:
        assert not crud.finish_job(session, job_id=job_id, status="failed", error_message="late")
        assert crud.claim_job(session, job_id=job_id, worker="again", stale_after=-1) is None
        job = crud.get_job(session, job_id=job_id)
        assert job is not None and job.status == "succeeded" and job.metrics == {"x": 1}
        assert [a.name for a in crud.list_artifacts(session, job_id=job_id)] == ["config.json"]
    with pytest.raises(ValueError, match="only a succeeded job"):
        with session_scope(db_url) as session:
            crud.finish_job(session, job_id=_new_job(db_url), status="failed", artifacts=files)


def test_sweeper_requeues_then_fails_after_max_attempts(db_url: str) -> None:
    job_id = _new_job(db_url)
    for attempt in (1, 2):
        with session_scope(db_url) as session:
            assert crud.claim_job(session, job_id=job_id, worker=f"w{attempt}", stale_after=60, max_attempts=2)
        with session_scope(db_url) as session:
            swept = crud.requeue_or_fail_stale(session, stale_after=-1, max_attempts=2)
        with session_scope(db_url) as session:
            job = crud.get_job(session, job_id=job_id)
            assert job is not None
            if attempt == 1:
                assert job_id in swept and job.status == "queued" and job.worker is None
            else:
                assert job_id not in swept and job.status == "failed" and job.error_code == "worker_lost"
    with session_scope(db_url) as session:  # nothing live is swept
        live = _new_job(db_url)
        crud.claim_job(session, job_id=live, worker="alive", stale_after=60)
    with session_scope(db_url) as session:
        assert live not in crud.requeue_or_fail_stale(session, stale_after=60, max_attempts=2)


def test_claim_out_of_attempts_fails_the_job_instead_of_leaving_it_queued(db_url: str) -> None:
    job_id = _new_job(db_url)
    with session_scope(db_url) as session:
        assert crud.claim_job(session, job_id=job_id, worker="w", stale_after=60, max_attempts=1)
        session.execute(crud.jobs.update(crud.jobs.Job).where(crud.jobs.Job.id == job_id)
                        .values(status="queued"))  # as a transient-error retry releases it
    with session_scope(db_url) as session:
        assert crud.claim_job(session, job_id=job_id, worker="w", stale_after=60, max_attempts=1) is None
    with session_scope(db_url) as session:
        job = crud.get_job(session, job_id=job_id)
        assert job is not None and job.status == "failed" and job.error_code == "max_attempts"


def test_stale_job_with_pending_cancel_ends_cancelled(db_url: str) -> None:
    job_id = _new_job(db_url)
    with session_scope(db_url) as session:
        job = crud.claim_job(session, job_id=job_id, worker="w", stale_after=60)
        assert job is not None
        crud.request_cancel(session, job_id=job_id, tenant_id=job.tenant_id)
    with session_scope(db_url) as session:
        assert job_id not in crud.requeue_or_fail_stale(session, stale_after=-1, max_attempts=3)
    with session_scope(db_url) as session:
        job = crud.get_job(session, job_id=job_id)
        assert job is not None and job.status == "cancelled"
