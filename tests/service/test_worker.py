"""Worker behaviour: re-delivery is a no-op, the sweeper re-queues stale jobs and gives up after
MAX_ATTEMPTS, and the outcome rules (OOM and bad input are never retried)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from compression.errors import InvalidInput, ModelNotFound, RatioNotReached, TransientError
from tests.service.support.client import FAST_JOB
from tests.service.support.infra import fresh_postgres_database
from tests.service.support.processes import wait_until
from tests.service.support.stack import Stack

pytestmark = pytest.mark.integration


# --- re-delivery --------------------------------------------------------------------------------


def test_redelivery_of_a_finished_job_is_a_no_op(distributed: Stack) -> None:
    from app.core.db import session_scope
    from app.models import Artifact, Job, JobEvent
    from app.queue import enqueue_compress

    alice = distributed.client("alice")
    job = alice.submit_ok(FAST_JOB)
    assert alice.wait_terminal(job["id"], timeout=240)["status"] == "succeeded", distributed.logs()
    settings = distributed.settings()

    def snapshot() -> tuple[Any, ...]:
        with session_scope(settings.database_url) as session:
            row = session.scalar(select(Job).where(Job.id == job["id"]))
            artifacts = session.scalars(select(Artifact.storage_key).where(Artifact.job_id == job["id"])).all()
            events = session.scalars(select(JobEvent.id).where(JobEvent.job_id == job["id"])).all()
            return row.status, row.attempts, row.finished_at, row.metrics, sorted(artifacts), len(events)

    before = snapshot()
    worker = distributed.processes[-1]
    skips = worker.log_text().count(f"job {job['id']}: nothing to do")
    enqueue_compress(settings, job["id"])  # the same message again, as a broker re-delivery would send it
    wait_until(lambda: worker.log_text().count(f"job {job['id']}: nothing to do") > skips, 60,
               "the worker to receive the duplicate", process=worker)
    assert snapshot() == before


def _ran_on(stack: Stack, job_id: str) -> str:
    """'node:pid' of the pool child that claimed the job (the job row's worker: events do not name it)."""
    from app.core.db import session_scope
    from app.models import Job

    with session_scope(stack.settings().database_url) as session:
        return str(session.scalar(select(Job.worker).where(Job.id == job_id)))


def test_each_job_runs_in_a_fresh_pool_child(distributed: Stack) -> None:
    """SPECTRA_WORKER_MAX_TASKS_PER_CHILD defaults to 1: the same Celery worker (one pool process)
    runs two jobs in two different children, so nothing one job leaked reaches the next."""
    from app.messaging import celery_config

    settings = distributed.settings()  # what the worker process read
    assert celery_config(settings)["worker_max_tasks_per_child"] == 1
    assert celery_config(settings)["worker_max_memory_per_child"] is None
    zero = settings.model_copy(update={"worker_max_tasks_per_child": 0, "worker_max_memory_per_child": 4_000_000})
    assert celery_config(zero)["worker_max_tasks_per_child"] is None  # 0 = never recycle
    assert celery_config(zero)["worker_max_memory_per_child"] == 4_000_000  # KiB, as Celery takes it

    alice = distributed.client("alice")
    worker = distributed.workers[-1]
    children = []
    for _ in range(2):
        job = alice.submit_ok(FAST_JOB)
        assert alice.wait_terminal(job["id"], timeout=240)["status"] == "succeeded", distributed.logs()
        children.append(_ran_on(distributed, job["id"]))
    assert all(child.startswith(f"{worker.name}@") for child in children), children  # one Celery node
    assert children[0] != children[1], children  # two pool children
    assert worker.alive()
    # Celery's banner names the pool class's module: the prefork pool that replaces children promptly.
    assert "concurrency: 1 (respawning_pool)" in worker.log_text()


def test_a_forked_child_opens_its_own_connections(quiet_database: str) -> None:
    """A replaced pool child is forked from a worker whose sweeper holds pooled connections: the child
    must get engines of its own and leave the parent's connections open."""
    from sqlalchemy import text

    from app.core.db import get_engine

    backend_pid = text("SELECT pg_backend_pid()")
    with get_engine(quiet_database).connect() as conn:
        parent_backend = conn.scalar(backend_pid)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only, never return into pytest
        try:
            with get_engine(quiet_database).connect() as conn:
                os._exit(0 if conn.scalar(backend_pid) != parent_backend else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # 3: the child used the parent's connection
    with get_engine(quiet_database).connect() as conn:
        assert conn.scalar(backend_pid) == parent_backend  # still the same session: nothing closed it


# --- the sweeper (in-process, on a database no worker or other sweeper touches) -----------------


@pytest.fixture
def quiet_database() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def _settings(database_url: str) -> Any:
    from app.core.config import Settings

    return Settings(database_url=database_url, broker_url="memory://", stale_after_seconds=30, max_attempts=3)


def _running_job(database_url: str, *, attempts: int, heartbeat_age: float) -> str:
    from app import crud
    from app.core.db import session_scope
    from app.models import Job, utcnow
    from compression.specs import JobSpec

    spec = JobSpec.model_validate(FAST_JOB).model_dump(mode="json")
    with session_scope(database_url) as session:
        tenant = crud.get_or_create_tenant(session, name="sweep")
        job = crud.create_job(session, tenant_id=tenant.id, spec=spec)
        session.execute(update(Job).where(Job.id == job.id).values(
            status="running", attempts=attempts, worker="gone:1", started_at=utcnow(),
            heartbeat_at=utcnow() - timedelta(seconds=heartbeat_age)))
        return job.id


def _row(database_url: str, job_id: str) -> Any:
    from app.core.db import session_scope
    from app.models import Job

    with session_scope(database_url) as session:
        return session.scalar(select(Job).where(Job.id == job_id))


def test_sweeper_requeues_a_stale_job_then_fails_it_after_max_attempts(quiet_database: str) -> None:
    from app import crud
    from app.core.db import session_scope
    from app.sweeper import sweep_once

    settings = _settings(quiet_database)
    live = _running_job(quiet_database, attempts=1, heartbeat_age=5)
    stale = _running_job(quiet_database, attempts=1, heartbeat_age=120)
    sent: list[str] = []
    assert sweep_once(settings, sent.append) == [stale] == sent
    assert _row(quiet_database, stale).status == "queued"
    assert _row(quiet_database, live).status == "running"

    # The re-sent job is claimed again and its worker dies again, until attempts run out.
    for attempt in (2, 3):
        with session_scope(quiet_database) as session:
            claimed = crud.claim_job(session, job_id=stale, worker=f"w{attempt}:1", stale_after=30, max_attempts=3)
            assert claimed is not None and claimed.attempts == attempt
        with session_scope(quiet_database) as session:
            from app.models import Job, utcnow

            session.execute(update(Job).where(Job.id == stale).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
        sent.clear()
        sweep_once(settings, sent.append)
        expected = "queued" if attempt < 3 else "failed"
        assert _row(quiet_database, stale).status == expected
        assert sent == ([stale] if expected == "queued" else [])
    row = _row(quiet_database, stale)
    assert row.error_code == "worker_lost" and "3 times" in row.error_message


def test_sweeper_resends_a_queued_job_whose_message_was_lost(quiet_database: str) -> None:
    from app import crud
    from app.core.db import session_scope
    from app.models import Job, utcnow
    from compression.specs import JobSpec
    from app.sweeper import sweep_once

    settings = _settings(quiet_database)
    spec = JobSpec.model_validate(FAST_JOB).model_dump(mode="json")
    with session_scope(quiet_database) as session:
        tenant = crud.get_or_create_tenant(session, name="sweep")
        fresh = crud.create_job(session, tenant_id=tenant.id, spec=spec).id
        lost = crud.create_job(session, tenant_id=tenant.id, spec=spec).id
        session.execute(update(Job).where(Job.id == lost).values(updated_at=utcnow() - timedelta(seconds=120)))
    sent: list[str] = []
    sweep_once(settings, sent.append)
    assert sent == [lost]
    sent.clear()
    sweep_once(settings, sent.append)  # re-sent at most once per STALE_AFTER_SECONDS
    assert sent == []
    assert _row(quiet_database, fresh).status == _row(quiet_database, lost).status == "queued"


# --- outcome rules -------------------------------------------------------------------------------


class OutOfMemoryError(RuntimeError):
    """Same name as torch.OutOfMemoryError; the worker recognises OOM without importing torch."""


@pytest.mark.parametrize(
    ("exc", "code", "retry"),
    [
        (MemoryError(), "out_of_memory", False),
        (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out_of_memory", False),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't allocate memory"),
         "out_of_memory", False),
        (RuntimeError("unable to mmap 538090408 bytes from file <model.safetensors>: Cannot allocate memory (12)"),
         "out_of_memory", False),
        (ModelNotFound("model 'a/b' was not found"), "model_not_found", False),
        (InvalidInput("evaluation.seq_len 9999 exceeds 512"), "invalid_input", False),
        (RatioNotReached("removed 0.1 but the target was 0.2"), "ratio_not_reached", False),
        (TransientError("hub timed out"), "transient", True),
        (ValueError("boom"), "internal", False),
    ],
)
def test_outcome_rules(exc: BaseException, code: str, retry: bool) -> None:
    from worker.outcome import classify

    failure = classify(exc)
    assert (failure.code, failure.retry) == (code, retry)
    assert failure.message


def test_tracker_throttles_progress_and_stops_at_the_deadline(quiet_database: str) -> None:
    """Progress writes are throttled except on a stage change; the time limit turns into a stop."""
    from app.core.db import session_scope
    from app.models import JobEvent
    from compression.errors import Cancelled
    from worker.progress import JobTracker

    job_id = _running_job(quiet_database, attempts=1, heartbeat_age=0)
    now = [0.0]
    tracker = JobTracker(database_url=quiet_database, job_id=job_id, worker="gone:1", heartbeat_seconds=60,
                         time_limit_seconds=10, min_interval=1.0, clock=lambda: now[0])
    for i in range(50):  # 50 calls within 0.5 s of fake time: one write
        now[0] = i * 0.01
        tracker.progress("calibrate", i / 50, f"window {i}")
    assert _row(quiet_database, job_id).progress_message == "window 0"
    tracker.progress("compress", 0.0, "layer 0")
    assert _row(quiet_database, job_id).progress_stage == "compress"
    with session_scope(quiet_database) as session:
        stages = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id, JobEvent.kind == "stage"))
        assert list(stages) == ["calibrate", "compress"]
    now[0] = 10.5
    with pytest.raises(Cancelled):
        tracker.progress("compress", 0.5, "layer 1")
    assert tracker.stop_reason == "time_limit" and "time limit of 10 s" in tracker.time_limit_message()


def test_api_side_modules_never_import_torch() -> None:
    """`spectra serve` imports the CLI, the Celery app and the sweeper: none of them may pull in torch."""
    import subprocess
    import sys

    code = ("import sys, app.cli, app.messaging, app.sweeper, worker.celery_app, worker.outcome; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout


def test_job_memory_cap_refuses_allocations_past_the_allowance_then_lifts() -> None:
    import resource

    from worker.memorycap import job_memory_cap

    before = resource.getrlimit(resource.RLIMIT_DATA)
    with job_memory_cap(64):
        small = bytearray(16 * 1024 * 1024)  # within the allowance
        with pytest.raises(MemoryError):
            bytearray(256 * 1024 * 1024)
        del small
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    assert len(bytearray(256 * 1024 * 1024)) == 256 * 1024 * 1024  # lifted
    with job_memory_cap(0):  # 0 = no cap
        assert resource.getrlimit(resource.RLIMIT_DATA) == before


def test_a_fork_waits_for_the_sweep_in_progress() -> None:
    """A worker forks a pool child per job while its sweeper thread runs; a fork in mid-sweep left the
    child holding copies of the thread's locks (it hung on its first import of psycopg). The fork must
    wait until the sweep is over: the child sees the sweep finished."""
    import threading
    import time

    from app import sweeper

    sweeping, state = threading.Event(), {"done": False}

    def sweep() -> None:
        with sweeper._NO_FORK_DURING_SWEEP:
            sweeping.set()
            time.sleep(0.5)  # a sweep in progress
            state["done"] = True

    thread = threading.Thread(target=sweep)
    thread.start()
    sweeping.wait(5)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if state["done"] else 1)
    _, status = os.waitpid(pid, 0)
    thread.join()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the fork happened in the middle of a sweep"
    assert sweeper._NO_FORK_DURING_SWEEP.acquire(blocking=False)  # released again in the parent
    sweeper._NO_FORK_DURING_SWEEP.release()
