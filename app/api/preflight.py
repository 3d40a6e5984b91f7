"""The preflight estimate at submission: computed from the model's config.json (never its weights),
stored on the job, and a 422 with the numbers when the job fits the workers' memory in no mode.

Local models are read under SPECTRA_MODEL_ROOTS where this process sees them; hub ids only from the
Hugging Face cache (no network on the request path). When neither works the estimate is left to the
worker, which computes it before it reads any weight (worker/preflight.py).
"""

from __future__ import annotations

import logging
from typing import Any

from app.api.validation import field_error
from app.core.config import Settings
from compression.errors import SpectraError
from compression.estimate import Estimate, estimate_for_spec
from compression.specs import JobSpec

log = logging.getLogger(__name__)


def submission_estimate(spec: JobSpec, settings: Settings) -> dict[str, Any] | None:
    """The estimate to store (None: not computable here); raises a 422 when the job cannot fit."""
    try:
        found: Estimate | None = estimate_for_spec(
            spec, model_roots=settings.model_roots, cache_dir=settings.hf_cache_dir, cached_only=True,
            device_limit=settings.worker_device_memory, host_limit=settings.worker_host_memory)
    except (SpectraError, ValueError, OSError) as exc:  # unknown folder, odd config: the worker will say why
        log.info("no preflight estimate for %s at submission: %s", spec.model, exc)
        return None
    if found is None:
        return None
    if found.chosen is None:
        raise field_error(("body", "execution"), found.refusal(), "does_not_fit")
    return found.as_dict()
