"""The sweeper: no job stays stuck because a worker or the broker lost it.

Two kinds of lost work, both recovered from SQL (the source of truth):
- running jobs whose heartbeat went stale (worker SIGKILLed, OOM-killed, machine gone): re-queued
  and re-sent, failed after MAX_ATTEMPTS (crud.requeue_or_fail_stale);
- queued jobs nobody claimed for STALE_AFTER_SECONDS (the message died with a broker restart without
  persistence, or with a filesystem-broker worker): re-sent. A duplicate message is harmless, since
  the claim is conditional; ``updated_at`` is bumped so a waiting job is re-sent at most once per period.

It runs as a daemon thread in `spectra serve` and in every worker; several sweepers racing is safe
because every change is a conditional UPDATE.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import crud, jobevents
from app.core.config import Settings
from app.core.db import session_scope
from app.jobstates import JobStatus
from app.models import Job, utcnow
from app.messaging import QUEUE, broker_transport_options, is_filesystem_broker

log = logging.getLogger(__name__)

Send = Callable[[str], None]


def resend_unclaimed(session: Session, *, stale_after: float, limit: int = 500) -> list[str]:
    """Queued jobs untouched for stale_after seconds; bumps updated_at and returns their ids."""
    now = utcnow()
    cutoff = now - timedelta(seconds=stale_after)
    ids = list(session.scalars(
        select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.updated_at < cutoff)
        .order_by(Job.created_at).limit(limit)
    ))
    resent: list[str] = []
    for job_id in ids:
        result = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value, Job.updated_at < cutoff)
            .values(updated_at=now).execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            resent.append(job_id)
    return resent


def sweep_once(settings: Settings, send: Send) -> list[str]:
    """One pass; returns the ids sent again. Commits before sending, so a message never outruns its row."""
    with session_scope(settings.database_url) as session:
        requeued = crud.requeue_or_fail_stale(session, stale_after=settings.stale_after_seconds,
                                              max_attempts=settings.max_attempts)
        unclaimed = resend_unclaimed(session, stale_after=settings.stale_after_seconds)
    waiting = waiting_messages(settings)
    # A queued job whose message still waits in the broker is fine: sending another would only pile up.
    ids = requeued + [j for j in unclaimed if j not in requeued and (waiting is None or j not in waiting)]
    for job_id in ids:
        try:
            send(job_id)
        except Exception:  # broker down: the row stays queued and the next pass sends it again
            log.warning("sweeper could not enqueue job %s", job_id, exc_info=True)
    if ids:
        log.info("sweeper re-sent %d job(s): %s", len(ids), ", ".join(ids))
    return ids


def waiting_messages(settings: Settings) -> str | None:
    """The raw text of the messages waiting in queue 'gpu' (job ids appear in them), None if unknown."""
    url = settings.broker_url or ""
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            try:
                return "\n".join(m.decode("utf-8", "replace") for m in client.lrange(QUEUE, 0, -1))
            finally:
                client.close()
        if is_filesystem_broker(url):
            folder = Path(broker_transport_options(settings)["data_folder_in"])
            texts = []
            for path in folder.glob("*.msg"):
                try:
                    texts.append(path.read_text("utf-8", "replace"))
                except OSError:  # consumed while we looked
                    pass
            return "\n".join(texts)
    except Exception:
        log.warning("could not list the waiting messages", exc_info=True)
    return None


# Held for each whole sweep, and taken by os.fork() in this process before it forks. A Celery worker
# forks a fresh pool child for each job (SPECTRA_WORKER_MAX_TASKS_PER_CHILD=1) while its sweeper thread
# runs; a fork in the middle of a sweep copied the locks that thread held (an import of psycopg, a
# logging or connection-pool lock) into the child as held forever, and the child hung on its first
# database access with the job never started (seen in CI: `_ModuleLock.acquire` in
# PGDialect_psycopg.import_dbapi). Between sweeps the thread only waits on an Event and holds nothing.
_NO_FORK_DURING_SWEEP = threading.Lock()


def _fresh_guard_in_child() -> None:
    global _NO_FORK_DURING_SWEEP
    _NO_FORK_DURING_SWEEP = threading.Lock()  # the parent's copy is held by this fork


os.register_at_fork(before=lambda: _NO_FORK_DURING_SWEEP.acquire(),
                    after_in_parent=lambda: _NO_FORK_DURING_SWEEP.release(),
                    after_in_child=_fresh_guard_in_child)


class Sweeper:
    """A daemon thread calling sweep_once every `interval` seconds until stop(); never during a fork."""

    def __init__(self, settings: Settings, send: Send, interval: float) -> None:
        self._settings = settings
        self._send = send
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="spectra-sweeper", daemon=True)

    @classmethod
    def from_settings(cls, settings: Settings, send: Send) -> "Sweeper":
        jobevents.publish_through(settings.broker_url)  # re-queued or failed jobs reach the event streams
        return cls(settings, send, interval=settings.sweep_interval_seconds)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            with _NO_FORK_DURING_SWEEP:
                try:
                    sweep_once(self._settings, self._send)
                except Exception:  # database unreachable: try again next period
                    log.warning("sweep failed", exc_info=True)
