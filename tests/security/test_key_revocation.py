"""Findings: no command revoked or listed keys, and a revoked key's download links stayed valid until they
expired. `spectra admin revoke-key` ends both: the key's requests and the local links issued to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from app import crud
from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app
from app.storage import job_prefix, store_from_settings
from compression.specs import JobSpec
from tests.service.support.client import FAST_JOB
from tests.service.support.processes import REPO


def _admin(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRA_") or k.startswith("SPECTRA_TEST_")}
    return subprocess.run([sys.executable, "-m", "app.cli", "admin", *args], cwd=str(REPO), capture_output=True,
                          text=True, timeout=120, env={**env, "SPECTRA_HOME": str(home), "SPECTRA_SIGNING_SECRET": "s"})


def test_revoking_a_key_ends_its_requests_and_its_download_links(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, signing_secret="s", auth_cache_seconds=0)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        key = _admin(tmp_path, "create-key", "--tenant", "grace").stdout.strip()
        other = _admin(tmp_path, "create-key", "--tenant", "grace").stdout.strip()
        folder = tmp_path / "artifact"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        with session_scope(settings.database_url or "") as session:
            tenant = crud.get_or_create_tenant(session, name="grace")
            spec = JobSpec.model_validate(FAST_JOB).model_dump(mode="json")
            job_id = crud.create_job(session, tenant_id=tenant.id, spec=spec).id
            crud.claim_job(session, job_id=job_id, worker="w", stale_after=60)
            files = store_from_settings(settings).upload_dir(folder, job_prefix(tenant.id, job_id))
            assert crud.finish_job(session, job_id=job_id, status="succeeded", artifacts=files, worker="w")
        mine = client.get(f"/v1/jobs/{job_id}/artifacts", headers={"X-API-Key": key}).json()[0]["url"]
        theirs = client.get(f"/v1/jobs/{job_id}/artifacts", headers={"X-API-Key": other}).json()[0]["url"]
        assert client.get(mine).status_code == 200

        listed = _admin(tmp_path, "list-keys", "--tenant", "grace").stdout
        assert key[:8] in listed and key not in listed and other not in listed  # prefixes, never keys
        done = _admin(tmp_path, "revoke-key", "--tenant", "grace", key)
        assert done.returncode == 0, done.stderr
        assert "grace" in _admin(tmp_path, "list-tenants").stdout

        assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 401
        gone = client.get(mine)
        assert gone.status_code == 403 and "revoked" in gone.json()["detail"], gone.text
        assert client.get(theirs).status_code == 200  # a link of the tenant's other key still works
