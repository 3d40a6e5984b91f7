"""Checks on a JobSpec that depend on this deployment's settings (allowed local roots)."""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError

from app.core.config import Settings
from app.crud import Cursor
from compression.specs import JobSpec

# Job ids are uuid4 hex; anything else (NUL bytes, 10 kB, odd characters) cannot exist. Checked before
# any query: PostgreSQL refuses a NUL byte with an error, not an empty result.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def field_error(loc: tuple[str | int, ...], message: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 shaped like FastAPI's own, naming the offending field."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": kind}])


def _under(path: str, roots: list[Path]) -> bool:
    # normpath, not resolve(): the API may not see the worker's disk; the loader re-checks with realpath.
    candidate = Path(os.path.normpath(path))
    return any(candidate == root or candidate.is_relative_to(root) for root in roots)


def check_allowed_paths(spec: JobSpec, settings: Settings) -> None:
    if spec.model.startswith("/"):
        if not settings.model_roots:
            raise field_error(("body", "model"), "local model paths are disabled on this server "
                              "(SPECTRA_MODEL_ROOTS is empty); use a Hugging Face id like 'org/name'")
        if not _under(spec.model, settings.model_roots):
            roots = ", ".join(str(r) for r in settings.model_roots)
            raise field_error(("body", "model"), f"local model path must lie under an allowed root ({roots})")
    path = spec.calibration.path
    if spec.calibration.source == "file" and path is not None:
        if not settings.data_roots:
            raise field_error(("body", "calibration", "path"), "calibration files are disabled on this "
                              "server (SPECTRA_DATA_ROOTS is empty); use a named corpus")
        if path.startswith("/") and not _under(path, settings.data_roots):
            roots = ", ".join(str(r) for r in settings.data_roots)
            raise field_error(("body", "calibration", "path"), f"calibration file must lie under an allowed data root ({roots})")


# Every list in a JobSpec has a length bound, so a valid spec is a few kB; this bounds what one job
# costs every later read of it (the row, its JSON), whatever the spec's schema becomes.
MAX_SPEC_BYTES = 16 * 1024


def check_spec_size(dumped: dict[str, Any]) -> None:
    size = len(json.dumps(dumped, separators=(",", ":")))
    if size > MAX_SPEC_BYTES:
        raise field_error(("body",), f"the job spec is {size} bytes as stored; at most {MAX_SPEC_BYTES} are "
                          "accepted: shorten its lists and strings")


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = json.dumps({"t": created_at.isoformat(), "id": job_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> Cursor:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        created = datetime.fromisoformat(data["t"])
        job_id = str(data["id"])
        # Only what encode_cursor writes: UTC (+00:00). Another offset (+23:59:59.999999 parses)
        # could move the instant out of the database's range, an error there instead of a 422 here.
        if created.utcoffset() != timedelta(0) or not JOB_ID.fullmatch(job_id):  # no NUL for PostgreSQL
            raise ValueError
    except (ValueError, KeyError, TypeError, OverflowError):
        raise field_error(("query", "cursor"), "invalid cursor: pass back next_cursor from the previous page "
                          "unchanged") from None
    return Cursor(created_at=created, job_id=job_id)
