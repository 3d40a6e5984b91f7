"""Finding: any tenant could compress any model under the model roots and anything the worker's hub token
could read, private or gated. A service-wide allow-list (SPECTRA_ALLOWED_MODELS) and a per-tenant one
(`spectra admin set-tenant --allowed-models`) bound what a tenant may name, checked at submission."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app import crud
from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app
from tests.service.api_env import job_body


def test_a_tenant_may_submit_only_the_models_it_is_allowed(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, signing_secret="s",  # type: ignore[arg-type]
                        allowed_models="raincandy-u/*,TinyStories-656K")
    with TestClient(create_app(settings)) as client:
        with session_scope(settings.database_url or "") as session:
            _, key = crud.create_api_key(session, tenant_name="ivan")
            _, trusted = crud.create_api_key(session, tenant_name="trusted")
            crud.set_tenant(session, name="trusted", allowed_models=["private-org/*"])

        def submit(api_key: str, model: str) -> int:
            return client.post("/v1/jobs", json=job_body(model=model), headers={"X-API-Key": api_key}).status_code

        assert submit(key, "raincandy-u/TinyStories-656K") == 202
        assert submit(key, "private-org/secret-model") == 403  # gated or private to the worker's token
        refused = client.post("/v1/jobs", json=job_body(model="meta-llama/Llama-3.1-8B"), headers={"X-API-Key": key})
        assert refused.status_code == 403 and "allowed" in refused.json()["detail"]
        assert submit(trusted, "private-org/secret-model") == 202  # its own list replaces the service's
        assert submit(trusted, "raincandy-u/TinyStories-656K") == 403
