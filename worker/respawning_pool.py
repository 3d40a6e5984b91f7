"""Celery's prefork pool, replacing a finished child promptly.

With worker_max_tasks_per_child=1 (app.core.config) every job runs in a fresh child. Celery replaces
an exited child when it notices the exit, but it sometimes notices only at its pool-maintenance
timer, every 5 s: measured with bench/api_load.py, two jobs in four waited 4.5-5 s for a child while
the others waited 0.5 s. Checking every 0.25 s bounds that wait; a check with nothing to replace
only looks at the children's exit codes.

Selected through the `worker_pool` setting (app/messaging.py), which Celery uses whenever the
command line asks for the default prefork pool.
"""

from __future__ import annotations

from typing import Any

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool

MAINTAIN_EVERY_SECONDS = 0.25


class _PromptlyRespawningPool(AsynPool):
    @property
    def timers(self) -> dict[Any, float]:
        return {self.maintain_pool: MAINTAIN_EVERY_SECONDS}


class PromptRespawnTaskPool(TaskPool):
    Pool = _PromptlyRespawningPool
