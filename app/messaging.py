"""The Celery message contract (queue, task name) and the Celery settings built from Spectra's
settings, shared by the producer (app.queue), the sweeper (app.sweeper) and the worker (worker/).
It lives in the service core so that app/ never imports worker/; worker/ imports it. Torch-free.

Why each setting (shared/reference/service.md section 3):
- acks_late + reject_on_worker_lost: a job whose process dies is re-delivered, not acked and lost;
  the SQL ``attempts`` counter (crud.claim_job) bounds the loop an OOM-kill would otherwise cause.
- prefetch 1: a long GPU job never holds a second message hostage.
- visibility_timeout above the hard time limit: Redis must not re-deliver a job that is still running.
- cancel_long_running_tasks_on_connection_loss: after a broker blip a late-ack task would otherwise
  run twice in parallel; the sweeper re-queues the job from SQL instead.
- max_tasks_per_child (default 1) / max_memory_per_child: a pool child that ran a job keeps the
  memory torch cached or fragmented; it is replaced instead of carrying that into the next job
  (app.core.config explains the default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

QUEUE = "gpu"
TASK_NAME = "spectra.compress"
# Seconds between the soft limit (the task cleans up and fails the job) and the hard kill.
HARD_LIMIT_GRACE_SECONDS = 60
# Redis re-delivers an un-acked message after this much more than the hard limit.
VISIBILITY_MARGIN_SECONDS = 3600


class BrokerSettings(Protocol):
    """The part of app.core.config.Settings this module reads."""

    home: Path
    broker_url: str
    job_time_limit_seconds: int
    worker_max_tasks_per_child: int
    worker_max_memory_per_child: int


def time_limits(settings: BrokerSettings) -> tuple[int, int]:
    """(soft, hard) Celery time limits in seconds for one job."""
    soft = int(settings.job_time_limit_seconds)
    return soft, soft + HARD_LIMIT_GRACE_SECONDS


def is_filesystem_broker(broker_url: str) -> bool:
    return broker_url.startswith("filesystem:")


def broker_folder(settings: BrokerSettings) -> Path:
    """Where the embedded filesystem broker keeps its messages (shared by API and worker)."""
    return Path(settings.home) / "broker"


def broker_transport_options(settings: BrokerSettings) -> dict[str, Any]:
    """Transport options for the configured broker; creates the filesystem broker's folders."""
    if is_filesystem_broker(settings.broker_url):
        root = broker_folder(settings)
        queue, processed, control = root / "queue", root / "processed", root / "control"
        for folder in (queue, processed, control):
            folder.mkdir(parents=True, exist_ok=True)
        # data_folder_in == data_folder_out: producer and consumer share one folder. control_folder
        # defaults to a relative 'control/' in the cwd, which would mix unrelated installs.
        return {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "store_processed": False,
            "control_folder": str(control),
        }
    _, hard = time_limits(settings)
    return {"visibility_timeout": hard + VISIBILITY_MARGIN_SECONDS}


def celery_config(settings: BrokerSettings) -> dict[str, Any]:
    """The full Celery configuration for producer and worker."""
    soft, hard = time_limits(settings)
    transport = broker_transport_options(settings)
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # Job state lives in SQL; Celery results would be a second, divergent copy.
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        # 0 in our settings means "no limit", which Celery spells None.
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child or None,
        "worker_max_memory_per_child": settings.worker_max_memory_per_child or None,
        "worker_pool": "worker.respawning_pool:PromptRespawnTaskPool",  # prefork, replacing children promptly
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_routes": {TASK_NAME: {"queue": QUEUE}},
        "task_default_queue": QUEUE,
        "task_soft_time_limit": soft,
        "task_time_limit": hard,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "enable_utc": True,
    }
