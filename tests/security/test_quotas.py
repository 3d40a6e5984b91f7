"""Finding: nothing bounded how fast a tenant submits or how much worker time it uses per day; the
active-job quota was the only limit and cancelling got around it. Both are counted from the job rows,
service-wide settings with per-tenant overrides (`spectra admin set-tenant`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update

from app import crud
from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app
from app.models import Job, utcnow
from tests.service.api_env import job_body


def test_submissions_per_minute_count_cancelled_jobs(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, signing_secret="s", submissions_per_minute_per_tenant=3)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        with session_scope(settings.database_url or "") as session:
            _, key = crud.create_api_key(session, tenant_name="hasty")
            _, calm = crud.create_api_key(session, tenant_name="calm")
        headers = {"X-API-Key": key}
        for _ in range(3):
            job = client.post("/v1/jobs", json=job_body(), headers=headers).json()
            assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers).status_code == 202
        refused = client.post("/v1/jobs", json=job_body(), headers=headers)
        assert refused.status_code == 429 and "per minute" in refused.json()["detail"], refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert client.post("/v1/jobs", json=job_body(), headers={"X-API-Key": calm}).status_code == 202


def test_daily_gpu_budget_counts_the_time_jobs_ran(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, signing_secret="s")  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        with session_scope(settings.database_url or "") as session:
            row, key = crud.create_api_key(session, tenant_name="heavy")
            crud.set_tenant(session, name="heavy", daily_gpu_seconds=3600)
        headers = {"X-API-Key": key}
        first = client.post("/v1/jobs", json=job_body(), headers=headers).json()
        assert client.post("/v1/jobs", json=job_body(), headers=headers).status_code == 202  # budget unused
        with session_scope(settings.database_url or "") as session:  # the first job ran for 2 hours, then stopped
            now = utcnow()
            session.execute(update(Job).where(Job.id == first["id"]).values(
                status="cancelled", started_at=now - timedelta(hours=3), finished_at=now - timedelta(hours=1)))
            assert 7199 <= crud.gpu_seconds_last_day(session, tenant_id=row.tenant_id) <= 7201
        refused = client.post("/v1/jobs", json=job_body(), headers=headers)
        assert refused.status_code == 429 and "GPU-seconds" in refused.json()["detail"], refused.text
        with session_scope(settings.database_url or "") as session:
            crud.set_tenant(session, name="heavy", daily_gpu_seconds=None)  # back to the service's (unlimited)
        assert client.post("/v1/jobs", json=job_body(), headers=headers).status_code == 202
