"""Fuzz the whole API from its own OpenAPI schema (schemathesis) against a real uvicorn.

Every operation of the served /openapi.json gets generated requests, valid ones and invalid ones,
authenticated with a real key; every response must not be a 5xx and must conform to the schema
(documented status code, content type, body and headers). The operations that take a job id run a
second time against real jobs (queued and succeeded with artifacts), and the download runs with a
real token, so the success paths are fuzzed too, not only the 404s.

Bounded and reproducible: a fixed number of examples per operation and mode, derandomized
Hypothesis, no example database. The server runs on PostgreSQL + Redis, the production setup (and
the stricter database: it refuses NUL bytes in text, which fuzzers love to send).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance, status_code_conformance,
)

from tests.service.api_env import ApiServer, api, job_body  # noqa: F401  (fixture)
from tests.service.test_security_matrix import succeeded_job

EXAMPLES = 15  # per operation and mode (fewer where the input space is smaller); 40 runs in all
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=False,
    phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
)


def _runs(schema: Any, key: str, jobs: dict[str, str], token: str) -> Iterator[tuple[str, Any]]:
    """(label, strategy) for every operation in both modes, plus fixed real ids / a real token."""
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            yield f"{operation.label} [{mode.value}]", operation.as_strategy(mode, headers={"X-API-Key": key})
            if "{job_id}" in operation.path:
                for name, job_id in jobs.items():
                    yield (f"{operation.label} [{mode.value}, {name} job]",
                           operation.as_strategy(mode, headers={"X-API-Key": key}, path_parameters={"job_id": job_id}))
            if operation.label == "POST /v1/jobs" and mode is GenerationMode.POSITIVE:
                # Random bodies almost never pass JobSpec; a valid one fuzzes Idempotency-Key and the 202 path.
                yield f"{operation.label} [valid body]", operation.as_strategy(
                    mode, headers={"X-API-Key": key}, body=job_body(), media_type="application/json")
            if operation.path == "/v1/artifacts/download" and mode is GenerationMode.POSITIVE:
                yield f"{operation.label} [real token]", operation.as_strategy(mode, query={"token": token})


@pytest.mark.parametrize("api", ["postgres"], indirect=True)
def test_api_conforms_to_its_openapi_schema(api: ApiServer, tmp_path: Path) -> None:
    key = api.new_key("fuzz-tenant")
    with api.client(key) as client:
        queued = client.post("/v1/jobs", json=job_body()).json()["id"]
    succeeded = succeeded_job(api, key, tmp_path / "artifacts")
    with api.client(key) as client:
        url = client.get(f"/v1/jobs/{succeeded}/artifacts").json()[0]["url"]
    token = parse_qs(urlparse(url).query)["token"][0]

    document = httpx.get(f"{api.base_url}/openapi.json", timeout=20).json()
    schema = schemathesis.openapi.from_dict(document, config=SchemathesisConfig.from_dict({"seed": 20261123}))
    session = requests.Session()
    failures: list[str] = []
    unsatisfiable: list[str] = []
    statuses: dict[int, int] = {}
    runs = list(_runs(schema, key, {"queued": queued, "succeeded": succeeded}, token))
    documented = {f"{method.upper()} {path}" for path, ops in document["paths"].items() for method in ops}
    assert documented == {label.split(" [")[0] for label, _ in runs} and len(documented) >= 11, documented

    for label, strategy in runs:
        @FUZZ_SETTINGS
        @given(case=strategy)
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=api.base_url, session=session, checks=CHECKS, timeout=20)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        try:
            fuzz()
        except Unsatisfiable:  # negative mode: nothing in this operation can be made invalid (no params)
            unsatisfiable.append(label)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group; go on, report all at the end
            failures.append(f"--- {label}\n{exc}")
    assert not failures, "\n".join(failures)
    assert all("[negative" in label for label in unsatisfiable), unsatisfiable
    # The fuzzer reached the success paths and the refusals, not only one kind of answer.
    assert {200, 202, 403, 404, 409, 422} <= set(statuses), statuses
    assert statuses[202] > 5 and sum(statuses.values()) > 250, statuses
