"""Tell listeners (the API's event streams) that a job has new events, once they are committed.

The job_events table is the record: a stream reads it, so a client that reconnects with
Last-Event-ID misses nothing. Redis pub/sub only wakes the streams up early: every process that
changes jobs outside the API (the worker, its sweeper) calls `publish_through(broker_url)` once, and
from then on each commit that inserted job events publishes those jobs' ids on CHANNEL. Without
Redis (the embedded default) nothing is published and the streams follow the database by polling.
"""

from __future__ import annotations

import logging

from sqlalchemy import event
from sqlalchemy.orm import Session, object_session

from app.models import JobEvent

log = logging.getLogger(__name__)
CHANNEL = "spectra:job-events"
_PENDING = "spectra_jobs_with_new_events"
_client = None  # redis.Redis of this process, once publish_through() was called with a Redis URL


def publish_through(broker_url: str | None) -> None:
    """Publish this process's committed job events through the Redis broker (no-op for other brokers)."""
    global _client
    if _client is None and broker_url and broker_url.startswith(("redis://", "rediss://")):
        import redis

        _client = redis.Redis.from_url(broker_url, socket_timeout=0.5, socket_connect_timeout=0.5)


@event.listens_for(JobEvent, "after_insert")
def _remember(_mapper, _connection, target: JobEvent) -> None:  # type: ignore[no-untyped-def]
    session = object_session(target)
    if session is not None and _client is not None:
        session.info.setdefault(_PENDING, set()).add(target.job_id)


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    job_ids = session.info.pop(_PENDING, None)
    if not job_ids or _client is None:
        return
    try:
        pipe = _client.pipeline(transaction=False)
        for job_id in sorted(job_ids):
            pipe.publish(CHANNEL, job_id)
        pipe.execute()
    except Exception as exc:  # a stream then finds the events at its next poll of the database
        log.warning("could not publish job events: %s", exc)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)
