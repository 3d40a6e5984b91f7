"""The preflight estimate of a job the API could not estimate (a hub model not in the API's cache, a
model root only the workers see): computed here before any weight is read, and stored on the job."""

from __future__ import annotations

from typing import Any

from app import crud
from app.core.config import Settings
from app.core.db import session_scope
from compression.specs import JobSpec


def store_estimate(settings: Settings, *, job_id: str, spec: JobSpec, run_settings: Any) -> dict[str, Any] | None:
    """Compute (config.json may be downloaded), store and return it; raises DoesNotFit when no mode fits
    the limits, which fails the job with error code does_not_fit and the numbers."""
    from compression.estimate import preflight
    from compression.models import resolve_device  # torch: this runs in the worker only

    found = preflight(spec, model_roots=run_settings.model_roots, cache_dir=run_settings.cache_dir,
                      device=resolve_device(spec.device).type, device_limit=run_settings.device_memory_limit,
                      host_limit=run_settings.host_memory_limit)
    if found is None:
        return None
    with session_scope(settings.database_url) as session:
        crud.set_estimate(session, job_id=job_id, estimate=found.as_dict())
        crud.add_event(session, job_id=job_id, kind="message",
                       message="preflight estimate: " + "; ".join(m.describe() for m in found.modes),
                       data={"chosen": found.chosen})
    return found.as_dict()
