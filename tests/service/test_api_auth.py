"""Auth and tenant isolation over real HTTP: no key / wrong key -> 401, another tenant's job -> 404."""

from __future__ import annotations

from datetime import UTC, datetime

from app.core.db import session_scope
from app.models import ApiKey
from app.security import hash_api_key
from tests.service.api_env import ApiServer, api, job_body  # noqa: F401  (fixture)

JOB = "0" * 32
ENDPOINTS = [
    ("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", f"/v1/jobs/{JOB}"), ("POST", f"/v1/jobs/{JOB}/cancel"),
    ("GET", f"/v1/jobs/{JOB}/events"), ("GET", f"/v1/jobs/{JOB}/artifacts"), ("GET", "/v1/methods"),
]


def test_every_endpoint_needs_a_valid_key(api: ApiServer) -> None:
    good = api.new_key("auth-tenant")
    wrong = "sk_" + "A" * 43
    for key in (None, wrong, "not-a-key", good + "x"):
        with api.client(key) as client:
            for method, path in ENDPOINTS:
                response = client.request(method, path, json=job_body() if method == "POST" else None)
                assert response.status_code == 401, (key, method, path, response.text)
                assert "X-API-Key" in response.json()["detail"]


def test_revoked_key_is_refused(api: ApiServer) -> None:
    key = api.new_key("revoking-tenant")
    with api.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200
        with session_scope(api.database_url) as session:
            row = session.query(ApiKey).filter_by(key_hash=hash_api_key(key)).one()
            row.revoked_at = datetime.now(UTC)
        assert client.get("/v1/jobs").status_code == 401


def test_keys_are_stored_only_as_hashes(api: ApiServer) -> None:
    key = api.new_key("hash-tenant")
    with session_scope(api.database_url) as session:
        row = session.query(ApiKey).filter_by(key_hash=hash_api_key(key)).one()
        assert key not in (row.key_hash, row.prefix) and row.prefix == key[:8]


def test_other_tenant_gets_404_on_every_job_endpoint(api: ApiServer) -> None:
    owner, intruder = api.new_key("owner"), api.new_key("intruder")
    with api.client(owner) as client:
        job = client.post("/v1/jobs", json=job_body()).json()
    with api.client(intruder) as client:
        for method, path in [("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/artifacts")]:
            response = client.request(method, f"/v1/jobs/{job['id']}{path}")
            assert response.status_code == 404, (path, response.text)
            assert job["id"] in response.json()["detail"]
        assert job["id"] not in [j["id"] for j in client.get("/v1/jobs").json()["items"]]
    with api.client(owner) as client:  # the intruder's cancel did nothing
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
