"""Messages with nothing to claim are dropped in the worker's main process, before a pool child.

Every job runs in a fresh pool child (worker_max_tasks_per_child=1), so a message whose task only
finds out in the child that there is nothing to do (its job was cancelled while queued, finished
already, or was claimed through another message: app.crud.scheduling) still cost a fork and a
replacement child: one tenant's 40 submit-then-cancel pairs delayed another tenant's job by 41 s.
Celery asks a request whether it was revoked in the main process right before it hands the request
to the pool; answering "revoked" for such a message acknowledges it there, and the pool never sees it.
One indexed EXISTS query per message. When the database cannot be asked, the message goes to the pool
as before (the child's claim decides), so a database blip never loses a job.
"""

from __future__ import annotations

import logging

from celery.worker.request import Request
from celery.worker.state import task_ready

from app import crud
from app.core.config import get_settings
from app.core.db import session_scope

log = logging.getLogger(__name__)


def _nothing_to_claim(hint: str | None) -> bool:
    settings = get_settings()
    try:
        with session_scope(settings.database_url) as session:
            return not crud.has_claimable_job(session, hint=hint, stale_after=settings.stale_after_seconds)
    except Exception:  # the child's claim decides, as it did before this check existed
        log.warning("could not check for claimable jobs; handing the message to the pool", exc_info=True)
        return False


class DropWhenNothingToClaim(Request):
    """The compress task's Request class (Task.Request): see the module doc."""

    def revoked(self) -> bool:
        if super().revoked():
            return True
        args = self.args or ()
        hint = str(args[0]) if args else None
        if not _nothing_to_claim(hint):
            return False
        log.info("job %s: nothing to do (cancelled, finished or claimed through another message); "
                 "message dropped before the pool", hint)
        task_ready(self)
        self.acknowledge()
        self._already_revoked = True
        return True
