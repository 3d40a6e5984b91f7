"""JobOut's JSON without building pydantic models: the hot read routes answer with these bytes.

Validating 50 `JobOut`s and re-encoding them cost more CPU than the query (bench/README.md). The
dict below has JobOut's fields in JobOut's order with the same values (datetimes as pydantic writes
them: ISO 8601, 'Z' for UTC, microseconds only when non-zero); tests/service/test_api_fastpath.py
checks it against `JobOut.from_row(...).model_dump(mode="json")`, and the routes keep
`response_model=JobOut` so the OpenAPI schema is unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic_core import to_jsonable_python
from starlette.responses import Response

_OPTIONS = orjson.OPT_UTC_Z


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)  # SQLite may hand back an int for a REAL


def job_json(row: Any) -> dict[str, Any]:
    """JobOut as a JSON-ready dict, from an ORM Job or a Core row with the jobs table's columns."""
    base = f"/v1/jobs/{row.id}"
    error = None
    if row.error_code or row.error_message:
        error = {"code": row.error_code, "message": row.error_message}
    return {
        "id": row.id, "status": row.status, "model": row.model, "revision": row.revision, "method": row.method,
        "target_ratio": float(row.target_ratio), "spec": row.spec,
        "progress": {"stage": row.progress_stage, "fraction": _float(row.progress_fraction),
                     "message": row.progress_message, "stage_fraction": _float(row.progress_stage_fraction),
                     "layer": row.progress_layer, "layers": row.progress_layers,
                     "eta_seconds": _float(row.progress_eta_seconds)},
        "metrics": row.metrics, "estimate": row.estimate, "error": error, "attempts": row.attempts,
        "cancel_requested": bool(row.cancel_requested),
        "created_at": row.created_at, "started_at": row.started_at, "finished_at": row.finished_at,
        "updated_at": row.updated_at,
        "links": {"self": base, "events": f"{base}/events", "artifacts": f"{base}/artifacts",
                  "cancel": f"{base}/cancel"},
    }


def _iso_utc(column: str) -> str:
    """SQL for a timestamptz as job_json writes it: UTC, 'Z', the fraction only when non-zero."""
    return f"""replace(to_char(timezone('UTC', {column}), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), '.000000Z', 'Z')"""


# job_json, computed by PostgreSQL as JSON text (one column, `json_build_object(...)::text`). A page
# of 50 jobs cost the API more CPU in decoding rows (JSON columns, timestamps) and encoding them
# again than everything else together (bench/README.md); this way the API only joins the texts.
# The JSON columns (spec, metrics) are embedded as stored. Keep it in step with job_json above:
# tests/service/test_api_fastpath.py checks both against JobOut on PostgreSQL and SQLite.
JOB_JSON_SQL = f"""json_build_object(
    'id', id, 'status', status, 'model', model, 'revision', revision, 'method', method,
    'target_ratio', target_ratio, 'spec', spec,
    'progress', json_build_object('stage', progress_stage, 'fraction', progress_fraction,
                                  'message', progress_message, 'stage_fraction', progress_stage_fraction,
                                  'layer', progress_layer, 'layers', progress_layers,
                                  'eta_seconds', progress_eta_seconds),
    'metrics', metrics, 'estimate', estimate,
    'error', CASE WHEN coalesce(error_code, '') <> '' OR coalesce(error_message, '') <> ''
                  THEN json_build_object('code', error_code, 'message', error_message) END,
    'attempts', attempts, 'cancel_requested', coalesce(cancel_requested, false),
    'created_at', {_iso_utc("created_at")}, 'started_at', {_iso_utc("started_at")},
    'finished_at', {_iso_utc("finished_at")}, 'updated_at', {_iso_utc("updated_at")},
    'links', json_build_object('self', '/v1/jobs/' || id, 'events', '/v1/jobs/' || id || '/events',
                               'artifacts', '/v1/jobs/' || id || '/artifacts', 'cancel', '/v1/jobs/' || id || '/cancel')
)::text"""


def dumps(content: Any) -> bytes:
    try:
        return orjson.dumps(content, option=_OPTIONS)
    except TypeError:  # what orjson refuses (an integer over 64 bits in a stored spec): the stdlib way
        return json.dumps(to_jsonable_python(content), ensure_ascii=False, separators=(",", ":")).encode()


class JsonBytes(Response):
    """application/json from JSON-ready content (encoded by orjson) or from JSON bytes as they are."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)  # bytes: already JSON
