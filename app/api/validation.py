"""Checks on a JobSpec that depend on this deployment's settings (allowed local roots)."""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import datetime
from pathlib import Path

from fastapi.exceptions import RequestValidationError

from app.core.config import Settings
from app.crud import Cursor
from compression.specs import JobSpec, check_fit
from compression.specs.fit import DoesNotFit

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


def _readable_config(spec: JobSpec, settings: Settings) -> dict | None:
    """The model's config.json when it is a local folder this API process can see, else None (hub ids,
    or a folder only the workers see: they run the same check before loading any weight)."""
    if spec.model.startswith("/"):
        candidates = [Path(spec.model)]
    elif "/" not in spec.model:
        candidates = [root / spec.model for root in settings.model_roots]
    else:
        return None
    for folder in candidates:
        path = (folder / "config.json").resolve()  # a symlink may not lead the API out of the roots
        if any(path.is_relative_to(root) for root in settings.model_roots) and path.is_file():
            try:
                config = json.loads(path.read_text())
            except (OSError, ValueError):
                return None  # unreadable here; the worker reports it properly
            return config if isinstance(config, dict) else None
    return None


def check_model_fits(spec: JobSpec, settings: Settings) -> None:
    """Refuse at submission what the model's own config already rules out (family, targets, depth)."""
    config = _readable_config(spec, settings)
    if config is None:
        return
    try:
        check_fit(spec.method, spec.target_ratio, spec.options, config)
    except DoesNotFit as exc:
        raise field_error(("body", *exc.field), str(exc)) from None


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = json.dumps({"t": created_at.isoformat(), "id": job_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> Cursor:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        created = datetime.fromisoformat(data["t"])
        job_id = str(data["id"])
        if created.tzinfo is None or not JOB_ID.fullmatch(job_id):  # no NUL for PostgreSQL
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise field_error(("query", "cursor"), "invalid cursor: pass back next_cursor from the previous page "
                          "unchanged") from None
    return Cursor(created_at=created, job_id=job_id)
