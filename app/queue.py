"""Torch-free producer: the API sends 'spectra.compress' by name and never imports the worker's tasks."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

from app.core.config import Settings
from app.messaging import QUEUE, TASK_NAME, broker_transport_options, celery_config, is_filesystem_broker


_apps: dict[tuple[str, str], Celery] = {}


def producer(settings: Settings) -> Celery:
    """One Celery app per broker URL and home (the filesystem broker's folders live under home)."""
    key = (settings.broker_url or "", str(settings.home))
    app = _apps.get(key)
    if app is None:
        app = Celery("spectra", set_as_current=False)
        app.conf.update(celery_config(settings))
        _apps[key] = app
    return app


def enqueue_compress(settings: Settings, job_id: str) -> None:
    """Send the job id to queue 'gpu'. Called only after the job row is committed."""
    producer(settings).send_task(TASK_NAME, args=[job_id], queue=QUEUE)


def queue_depth(settings: Settings) -> int | None:
    """Messages waiting in the gpu queue: Redis LLEN, or None when the broker cannot tell cheaply."""
    url = settings.broker_url or ""
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return int(client.llen(QUEUE))
        finally:
            client.close()
    return None


def ping_broker(settings: Settings) -> None:
    """Raise when the broker is unreachable: Redis PING, or the filesystem broker folder not writable."""
    url = settings.broker_url or ""
    if is_filesystem_broker(url):
        probe = Path(broker_transport_options(settings)["data_folder_in"]) / f".ping-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        return
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return
    with producer(settings).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
