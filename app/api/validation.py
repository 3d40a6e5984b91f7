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
from compression.errors import InvalidInput
from compression.roots import find_data_file
from compression.specs import JobSpec, check_fit
from compression.specs.fit import NotForThisModel

# Job ids are uuid4 hex; anything else (NUL bytes, 10 kB, odd characters) cannot exist. Checked before
# any query: PostgreSQL refuses a NUL byte with an error, not an empty result.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def field_error(loc: tuple[str | int, ...], message: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 shaped like FastAPI's own, naming the offending field."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": kind}])


def _under(path: str, roots: list[Path]) -> bool:
    # realpath follows the links this process can see and normalises the rest (the API may not see the
    # worker's disk); the loader checks again on the worker, links resolved.
    candidate = Path(os.path.realpath(path))
    return any(candidate == root or candidate.is_relative_to(root) for root in roots)


def check_allowed_paths(spec: JobSpec, settings: Settings) -> None:
    """What the spec and this server's settings decide before any worker is involved: local model and
    calibration paths against the roots (the messages never name the roots: they are the server's
    paths, not the tenant's), and the device against the fleet."""
    if spec.device == "cuda" and settings.fleet_device == "cpu":
        raise field_error(("body", "device"), "this server's workers have no GPU; use device 'auto' or 'cpu'")
    if spec.model.startswith("/"):
        if not settings.model_roots:
            raise field_error(("body", "model"), "local model paths are disabled on this server "
                              "(SPECTRA_MODEL_ROOTS is empty); use a Hugging Face id like 'org/name'")
        if not _under(spec.model, settings.model_roots):
            raise field_error(("body", "model"), "local model path is outside this server's model roots; "
                              "give the name of a model folder under a model root instead")
    path = spec.calibration.path
    if spec.calibration.source == "file" and path is not None:
        if not settings.data_roots:
            raise field_error(("body", "calibration", "path"), "calibration files are disabled on this "
                              "server (SPECTRA_DATA_ROOTS is empty); use a named corpus")
        if path.startswith("/") and not _under(path, settings.data_roots):
            raise field_error(("body", "calibration", "path"), "calibration file is outside this server's "
                              "data roots; give a path relative to a data root")
        if any(root.is_dir() for root in settings.data_roots):  # this process sees the roots: check now
            try:
                find_data_file(path, settings.data_roots)
            except InvalidInput as exc:
                raise field_error(("body", "calibration", "path"), str(exc)) from None


def _visible_local_config(spec: JobSpec, settings: Settings) -> dict[str, Any] | None:
    """The local model's config.json when this process sees it under a model root, else None."""
    roots = [Path(os.path.realpath(r)) for r in settings.model_roots]
    if spec.model.startswith("/"):
        candidates = [Path(os.path.realpath(spec.model))]
    elif "/" not in spec.model:
        candidates = [Path(os.path.realpath(root / spec.model)) for root in roots]
    else:
        return None  # a hub id: the API does not download configs
    for folder in candidates:
        try:
            if not (any(folder == r or r in folder.parents for r in roots) and (folder / "config.json").is_file()):
                continue
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None  # a name too long, a broken config: the worker names the fault
        return config if isinstance(config, dict) else None
    return None


def check_model_fits(spec: JobSpec, settings: Settings) -> None:
    """Refuse at submission what the model's own config already rules out, when the API can read a local
    model's config (the worker checks again, for hub models too, before any weight): an unsupported
    family, a method that does not apply to it, targets it lacks, a shortgpt ratio its depth cannot reach."""
    config = _visible_local_config(spec, settings)
    if config is None:
        return
    try:
        check_fit(spec.method, spec.target_ratio, spec.options, config)
    except NotForThisModel as exc:
        raise field_error(("body", *exc.field), str(exc)) from None


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
