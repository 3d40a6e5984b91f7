"""Methods, artifacts with signed downloads, readiness, metrics, and the cheap safety rails
(503 when the database is down, 429 per key, CORS closed by default, no torch in the API)."""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from app import crud
from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app
from app.storage import job_prefix
from app.storage.local import LocalStore, sign_token
from compression.specs import METHODS
from tests.service.api_env import ADMIN_KEY, OPERATOR, ApiServer, api, job_body, redis_broker  # noqa: F401


def test_methods_list_every_method_with_its_options_schema(api: ApiServer) -> None:
    with api.client(api.new_key("methods")) as client:
        methods = {m["name"]: m for m in client.get("/v1/methods").json()}
        openapi = client.get("/openapi.json").json()
    job_schema = openapi["components"]["schemas"]["JobSpec"]["properties"]
    assert job_schema["execution"]["$ref"].endswith("/ExecutionSpec")
    assert openapi["components"]["schemas"]["ExecutionSpec"]["properties"]["mode"]["default"] == "auto"
    assert set(methods) == {m.value for m in METHODS}
    assert methods["svd"]["requires_calibration"] is False and methods["grasp"]["requires_calibration"] is True
    assert methods["grasp"]["paper"].startswith("https://arxiv.org/")
    schema = methods["asvd"]["options_schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert {"alpha", "scaling", "targets"} <= set(schema["properties"])
    assert "recovery" in methods["grasp"]["options_schema"]["properties"]
    execution = methods["svd_llm"]["execution_schema"]
    assert execution["properties"]["mode"]["enum"] == ["auto", "resident", "sequential"]
    assert execution["properties"]["offload"]["enum"] == ["cpu", "disk"]
    assert {"max_device_memory", "max_host_memory"} <= set(execution["properties"])


def test_artifacts_download_through_signed_links(api: ApiServer, tmp_path: Path) -> None:
    key = api.new_key("downloader")
    with api.client(key) as client:
        job = client.post("/v1/jobs", json=job_body()).json()
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"layers": 2}')
    (folder / "sub" / "model.safetensors").write_bytes(bytes(range(256)) * 4000)
    store = LocalStore(api.home / "artifacts", secret=b"test-signing-secret")
    with session_scope(api.database_url) as session:
        tenant_id = crud.get_job(session, job_id=job["id"]).tenant_id  # type: ignore[union-attr]
        crud.claim_job(session, job_id=job["id"], worker="w", stale_after=60)
    stored = store.upload_dir(folder, job_prefix(tenant_id, job["id"]))
    with session_scope(api.database_url) as session:
        assert crud.finish_job(session, job_id=job["id"], status="succeeded", metrics={"ppl_after": 9.5},
                               artifacts=stored, worker="w")
    with api.client(key) as client:
        done = client.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "succeeded" and done["metrics"] == {"ppl_after": 9.5}
        listed = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert [a["name"] for a in listed] == ["config.json", "sub/model.safetensors"]
    assert all(a["url"].startswith(f"{api.base_url}/v1/artifacts/download?token=") for a in listed)
    for item, path in zip(listed, [folder / "config.json", folder / "sub" / "model.safetensors"]):
        response = httpx.get(item["url"], timeout=20)  # no API key: the token is the credential
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == item["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert len(response.content) == item["size"]
    token = parse_qs(urlparse(listed[0]["url"]).query)["token"][0]
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    refused = httpx.get(f"{api.base_url}/v1/artifacts/download", params={"token": forged})
    assert refused.status_code == 403 and "signature" in refused.json()["detail"]
    expired = sign_token(b"test-signing-secret", stored[0].key, stored[0].name, ttl=-1)
    gone = httpx.get(f"{api.base_url}/v1/artifacts/download", params={"token": expired})
    assert gone.status_code == 403 and "expired" in gone.json()["detail"]
    with api.client(api.new_key("not-the-owner")) as client:
        assert client.get(f"/v1/jobs/{job['id']}/artifacts").status_code == 404
    durations = httpx.get(f"{api.base_url}/metrics", headers=OPERATOR).text
    assert 'spectra_job_duration_seconds_count{status="succeeded"}' in durations


def test_unknown_paths_and_methods_say_what_to_use(api: ApiServer) -> None:
    missing = httpx.get(f"{api.base_url}/jobs")
    assert missing.status_code == 404 and "/v1" in missing.json()["detail"]
    wrong = httpx.delete(f"{api.base_url}/v1/jobs/abc")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET" and "use GET" in wrong.json()["detail"]
    both = httpx.put(f"{api.base_url}/v1/jobs")
    assert both.headers["allow"] == "GET, POST"


def test_readyz_healthz_and_metrics(api: ApiServer) -> None:
    assert httpx.get(f"{api.base_url}/readyz").json() == {"status": "ready"}  # no details without the key
    ready = httpx.get(f"{api.base_url}/readyz", headers=OPERATOR).json()
    assert ready["status"] == "ready" and all(c["ok"] for c in ready["checks"].values())
    assert httpx.get(f"{api.base_url}/metrics").status_code == 401
    assert httpx.get(f"{api.base_url}/healthz").json() == {"status": "ok"}
    with api.client(api.new_key("metrics")) as client:
        client.post("/v1/jobs", json=job_body())
    text = httpx.get(f"{api.base_url}/metrics", headers=OPERATOR).text
    assert 'spectra_jobs{status="queued"}' in text
    source = "broker" if api.broker_url.startswith("redis") else "sql"  # Redis: LLEN of the gpu queue
    depth = next(line for line in text.splitlines() if line.startswith(f'spectra_queue_depth{{source="{source}"}}'))
    assert float(depth.split()[-1]) >= 1
    assert 'spectra_http_requests_total{method="POST",route="/v1/jobs",status="202"}' in text
    assert "spectra_http_request_duration_seconds_bucket" in text


def _local_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(home=tmp_path, signing_secret="s", admin_key=ADMIN_KEY, **overrides)  # type: ignore[arg-type]


def test_database_down_gives_503_not_500(tmp_path: Path) -> None:
    settings = _local_settings(tmp_path, database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/v1/jobs", headers={"X-API-Key": "sk_" + "a" * 43})
        assert response.status_code == 503 and "database is unavailable" in response.json()["detail"]
        assert response.headers["retry-after"]
        ready = client.get("/readyz", headers=OPERATOR)
        assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
        assert "database" in ready.json()["detail"] and ready.json()["checks"]["store"]["ok"] is True


def test_broker_down_fails_readiness_and_submission(tmp_path: Path) -> None:
    settings = _local_settings(tmp_path, broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz", headers=OPERATOR)
        assert ready.status_code == 503 and ready.json()["checks"]["broker"]["ok"] is False
        with session_scope(settings.database_url or "") as session:
            _, key = crud.create_api_key(session, tenant_name="t")
        refused = client.post("/v1/jobs", json=job_body(), headers={"X-API-Key": key})
        assert refused.status_code == 503 and "broker" in refused.json()["detail"]
        assert client.get("/v1/jobs", headers={"X-API-Key": key}).json()["items"] == []  # withdrawn


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_rate_limit_per_key_answers_429_with_retry_after(tmp_path: Path, shared: bool) -> None:
    overrides: dict[str, object] = {"rate_limit_per_minute": 3}
    with ExitStack() as stack:
        if shared:  # counted in Redis: one limit across API processes, in fixed one-minute windows
            overrides["broker_url"] = stack.enter_context(redis_broker())
            if time.time() % 60 > 50:  # don't let the window roll over in the middle of the test
                time.sleep(61 - time.time() % 60)
        _check_rate_limit(tmp_path, overrides)


def _check_rate_limit(tmp_path: Path, overrides: dict[str, object]) -> None:
    with TestClient(create_app(_local_settings(tmp_path, **overrides))) as client:
        with session_scope(client.app.state.settings.database_url) as session:  # type: ignore[attr-defined]
            _, first = crud.create_api_key(session, tenant_name="a")
            _, second = crud.create_api_key(session, tenant_name="b")
        codes = [client.get("/v1/jobs", headers={"X-API-Key": first}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/v1/jobs", headers={"X-API-Key": first})
        assert 1 <= int(limited.headers["retry-after"]) <= 60 and "rate limit" in limited.json()["detail"]
        assert client.get("/v1/jobs", headers={"X-API-Key": second}).status_code == 200


def test_active_job_quota_per_tenant(tmp_path: Path) -> None:
    with TestClient(create_app(_local_settings(tmp_path, max_active_jobs_per_tenant=2))) as client:
        with session_scope(client.app.state.settings.database_url) as session:  # type: ignore[attr-defined]
            _, key = crud.create_api_key(session, tenant_name="busy")
            _, other = crud.create_api_key(session, tenant_name="idle")
        submit = lambda k: client.post("/v1/jobs", json=job_body(), headers={"X-API-Key": k})  # noqa: E731
        first, _ = submit(key).json(), submit(key)
        refused = submit(key)
        assert refused.status_code == 429 and refused.headers["retry-after"] and "2 queued or running" in refused.json()["detail"]
        assert submit(other).status_code == 202  # quotas are per tenant
        client.post(f"/v1/jobs/{first['id']}/cancel", headers={"X-API-Key": key})
        assert submit(key).status_code == 202  # a cancelled job frees its slot


@pytest.mark.parametrize("origins", [[], ["https://app.example"]])
def test_cors_closed_unless_configured(tmp_path: Path, origins: list[str]) -> None:
    with TestClient(create_app(_local_settings(tmp_path, cors_origins=origins))) as client:
        response = client.options("/v1/jobs", headers={"Origin": "https://app.example",
                                                        "Access-Control-Request-Method": "GET"})
        allowed = response.headers.get("access-control-allow-origin")
        assert allowed == (origins[0] if origins else None)
        # A browser's GET of the polled list (answered before the middleware stack when it has no
        # Origin) gets the same CORS answer.
        response = client.get("/v1/jobs", headers={"Origin": "https://app.example"})
        assert response.headers.get("access-control-allow-origin") == (origins[0] if origins else None)


def test_api_never_imports_torch() -> None:
    code = "import sys, app.main, app.crud, app.storage.s3, app.queue; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_settings_never_show_secrets(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, signing_secret="hmac-very-secret",  # type: ignore[arg-type]
                        s3_secret_access_key="s3-very-secret")
    shown = repr(settings) + str(settings.model_dump()) + settings.model_dump_json()
    assert "s3-very-secret" not in shown and "hmac-very-secret" not in shown
    assert settings.signing_key() == b"hmac-very-secret"
