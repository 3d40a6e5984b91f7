"""Findings: without a key, /readyz named database and broker hosts and ports and the artifact folder, and
/metrics showed service-wide job counts; events named the worker's host and pid; compression.json named
local paths; download links followed the request's Host header when no public URL was set."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from app import crud
from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app
from app.storage import StoredFile, job_prefix
from compression.specs import JobSpec
from tests.security import models
from tests.security.conftest import HostileStack
from tests.service.support.client import FAST_JOB
from tests.service.support.infra import REDIS_URL


def test_readiness_and_metrics_tell_a_stranger_nothing(hostile: HostileStack) -> None:
    ready = httpx.get(f"{hostile.base_url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}, ready.text
    metrics = httpx.get(f"{hostile.base_url}/metrics", timeout=30)
    assert metrics.status_code == 401 and "spectra_jobs" not in metrics.text
    with_a_tenant_key = hostile.client("erin").http.get("/metrics")
    assert with_a_tenant_key.status_code == 401  # a tenant is not the operator


def test_events_and_artifact_name_no_host_pid_or_server_path(hostile: HostileStack) -> None:
    models.clone(hostile.model_root, "plain")
    hostile.worker()
    erin = hostile.client("erin")
    job = erin.submit_ok({**FAST_JOB, "model": "plain"})
    assert erin.wait_terminal(job["id"], timeout=180)["status"] == "succeeded", hostile.logs()
    events = json.dumps(erin.events(job["id"]))
    host = socket.gethostname()
    assert host not in events and "worker" not in json.loads(events)[-1].get("data", {}), events
    [report] = [a for a in erin.artifacts(job["id"]) if a["name"] == "compression.json"]
    text = httpx.get(report["url"], timeout=30).text
    for private in (str(hostile.model_root.parent), hostile.env["HF_HOME"], host):
        assert private not in text, private


def test_links_never_follow_the_host_header_outside_the_embedded_default(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, signing_secret="s", broker_url=f"{REDIS_URL}/0")  # type: ignore[arg-type]
    with TestClient(create_app(settings), base_url="http://evil.example") as client:
        with session_scope(settings.database_url or "") as session:
            row, key = crud.create_api_key(session, tenant_name="frank")
            spec = JobSpec.model_validate(FAST_JOB).model_dump(mode="json")
            job_id = crud.create_job(session, tenant_id=row.tenant_id, spec=spec).id
            crud.claim_job(session, job_id=job_id, worker="w", stale_after=60)
            stored = StoredFile(name="config.json", size=2, sha256="0" * 64,
                                key=f"{job_prefix(row.tenant_id, job_id)}/config.json")
            assert crud.finish_job(session, job_id=job_id, status="succeeded", artifacts=[stored], worker="w")
        listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers={"X-API-Key": key, "Host": "evil.example"})
    assert listed.status_code == 200, listed.text
    url = listed.json()[0]["url"]
    assert url.startswith("/v1/artifacts/download?token=") and "evil.example" not in listed.text, url
