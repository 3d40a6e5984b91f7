"""The Celery application: `celery -A worker.celery_app worker -Q gpu -c 1`.

Torch-free at import: the task module (which pulls in the library lazily) is loaded only by a
worker, through ``include``. A worker also runs the sweeper thread, so a job whose worker died is
re-queued or failed even when no API process is up.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from app.core.config import get_settings
from worker.config import celery_config

log = logging.getLogger(__name__)

app = Celery("spectra", include=["worker.tasks"])
app.conf.update(celery_config(get_settings()))

_sweeper: Any = None


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    """Runs in the worker's main process once it consumes; pool children never get here."""
    global _sweeper
    from worker.sweeper import Sweeper

    _sweeper = Sweeper.from_settings(get_settings(), send=send_compress)
    _sweeper.start()


@worker_shutting_down.connect
def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()


def send_compress(job_id: str) -> None:
    """Enqueue one job by id (the same message the API sends)."""
    from worker.config import QUEUE, TASK_NAME

    app.send_task(TASK_NAME, args=[job_id], queue=QUEUE)
