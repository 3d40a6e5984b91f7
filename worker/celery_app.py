"""The Celery application: `celery -A worker.celery_app worker -Q gpu -c 1`.

Torch-free at import: the task module (which pulls in the library lazily) is loaded only by a
worker, through ``include``. A worker also runs the sweeper thread, so a job whose worker died is
re-queued or failed even when no API process is up.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutting_down

from app.core.config import get_settings
from app.messaging import celery_config

log = logging.getLogger(__name__)

app = Celery("spectra", include=["worker.tasks"])
app.conf.update(celery_config(get_settings()))

_sweeper: Any = None


@worker_init.connect
def _preload_library(**_: Any) -> None:
    """Import the compression library (torch, the methods, and what transformers imports lazily on a
    first model load) in the worker's main process, before it forks its pool. Each job runs in a fresh
    pool child (SPECTRA_WORKER_MAX_TASKS_PER_CHILD=1), and a child that imported all that itself spent
    ~6 s on it: a tiny TinyStories job took 4-5 s instead of 0.2 s. A forked child finds it loaded
    (0.35 s for the same job). Importing starts no threads and touches no GPU, so forking afterwards
    is safe; the main process grows by the libraries' pages, which its children share."""
    import compression.methods  # noqa: F401
    import compression.run  # noqa: F401
    from compression.models import preload_transformers

    preload_transformers()


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    """Runs in the worker's main process once it consumes; pool children never get here."""
    global _sweeper
    from app.sweeper import Sweeper

    _sweeper = Sweeper.from_settings(get_settings(), send=send_compress)
    _sweeper.start()


@worker_shutting_down.connect
def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()


def send_compress(job_id: str) -> None:
    """Enqueue one job by id (the same message the API sends)."""
    from app.messaging import QUEUE, TASK_NAME

    app.send_task(TASK_NAME, args=[job_id], queue=QUEUE)
