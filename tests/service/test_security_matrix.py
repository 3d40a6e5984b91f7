"""Tenant isolation over every endpoint that takes a job id, and download links scoped to one object.

Another tenant's job id must look exactly like a job that does not exist: the same 404, the same
body (up to the id it echoes) and the same headers, whatever the job's state, so nobody can probe
for other tenants' ids. Download links are bearer tokens: each names one object, expires, and any
edit (payload or signature) is refused.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx

from app import crud
from app.core.db import session_scope
from app.storage import job_prefix
from app.storage.local import LocalStore, sign_token
from compression.specs import JobSpec
from tests.service.api_env import ApiServer, api, job_body  # noqa: F401  (fixture)
from tests.service.support.auth import tenant_of

SECRET = b"test-signing-secret"  # what api_env gives the server (SPECTRA_SIGNING_SECRET)
JOB_ENDPOINTS = [("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/artifacts"),
                 ("GET", "/archive"), ("GET", "/archive.sha256")]
FILES = {"config.json": b'{"layers": 2}', "model.safetensors": bytes(range(256)) * 64}


def succeeded_job(server: ApiServer, key: str, folder: Path, secret: bytes = SECRET) -> str:
    """A succeeded job with artifacts, made the way the worker publishes one (crud + store, no worker)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    spec = JobSpec.model_validate(job_body()).model_dump(mode="json")
    tenant_id = tenant_of(server.database_url, key).id
    with session_scope(server.database_url) as session:
        job_id = crud.create_job(session, tenant_id=tenant_id, spec=spec).id
        assert crud.claim_job(session, job_id=job_id, worker="security-test", stale_after=60) is not None
    stored = LocalStore(server.home / "artifacts", secret=secret).upload_dir(folder, job_prefix(tenant_id, job_id))
    with session_scope(server.database_url) as session:
        assert crud.finish_job(session, job_id=job_id, status="succeeded", metrics={"ppl_after": 1.0},
                               artifacts=stored, worker="security-test")
    return job_id


def _comparable(response: httpx.Response, job_id: str) -> tuple[int, str, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in ("date",)}
    return response.status_code, response.text.replace(job_id, "<id>"), headers


def test_another_tenants_job_ids_look_nonexistent_on_every_endpoint(api: ApiServer, tmp_path: Path) -> None:
    owner, intruder = api.new_key("matrix-owner"), api.new_key("matrix-intruder")
    with api.client(owner) as client:
        queued = client.post("/v1/jobs", json=job_body()).json()["id"]
        running = client.post("/v1/jobs", json=job_body(target_ratio=0.3)).json()["id"]
        cancelled = client.post("/v1/jobs", json=job_body(target_ratio=0.25)).json()["id"]
        assert client.post(f"/v1/jobs/{cancelled}/cancel").json()["status"] == "cancelled"
    with session_scope(api.database_url) as session:
        assert crud.claim_job(session, job_id=running, worker="security-test", stale_after=60) is not None
    succeeded = succeeded_job(api, owner, tmp_path / "out")
    with api.client(owner) as client:  # the owner sees all of them (the ids are real)
        for job_id in (queued, running, cancelled, succeeded):
            assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        assert len(client.get(f"/v1/jobs/{succeeded}/artifacts").json()) == len(FILES)

    with api.client(intruder) as client:
        for job_id in (queued, running, cancelled, succeeded):
            for method, suffix in JOB_ENDPOINTS:
                foreign = client.request(method, f"/v1/jobs/{job_id}{suffix}")
                ghost_id = uuid.uuid4().hex
                missing = client.request(method, f"/v1/jobs/{ghost_id}{suffix}")
                assert foreign.status_code == 404, (job_id, method, suffix, foreign.text)
                assert _comparable(foreign, job_id) == _comparable(missing, ghost_id), (method, suffix)
                assert foreign.json()["detail"] == f"job {job_id} not found"
        listed = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
        assert not {queued, running, cancelled, succeeded} & {j["id"] for j in listed}
        for status in ("queued", "running", "cancelled", "succeeded"):
            assert client.get("/v1/jobs", params={"status": status}).json()["items"] == []

    with api.client(owner) as client:  # the intruder's cancels changed nothing
        assert client.get(f"/v1/jobs/{queued}").json()["status"] == "queued"
        still = client.get(f"/v1/jobs/{running}").json()
        assert still["status"] == "running" and still["cancel_requested"] is False


def _links(server: ApiServer, key: str, job_id: str) -> dict[str, str]:
    with server.client(key) as client:
        listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()
    return {a["name"]: a["url"] for a in listed}


def _token(url: str) -> str:
    return parse_qs(urlparse(url).query)["token"][0]


def token_payload(token: str) -> dict[str, object]:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _download(server: ApiServer, token: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}/v1/artifacts/download", params={"token": token}, timeout=20)


def test_download_links_are_scoped_to_one_object_and_expire(api: ApiServer, tmp_path: Path) -> None:
    owner = api.new_key("links-owner")
    job_id = succeeded_job(api, owner, tmp_path / "out")
    links = _links(api, owner, job_id)
    assert set(links) == set(FILES)
    for name, url in links.items():  # each link serves exactly its own file
        got = httpx.get(url, timeout=20)
        assert got.status_code == 200 and got.content == FILES[name]
        assert got.headers["cache-control"] == "private, no-store"

    token_a, token_b = _token(links["config.json"]), _token(links["model.safetensors"])
    payload_a = token_payload(token_a)
    assert payload_a["k"] != token_payload(token_b)["k"]
    ttl = 900  # SPECTRA_LINK_TTL_SECONDS default; the listing says the same
    assert abs(int(payload_a["e"]) - (time.time() + ttl)) < 60  # type: ignore[arg-type]

    # Token A re-pointed at file B (payload edited, A's signature kept) is refused, and so is any
    # flipped signature, a token signed with another secret, an expired one, and garbage.
    retargeted = dict(payload_a, k=token_payload(token_b)["k"], f="model.safetensors")
    body = base64.urlsafe_b64encode(json.dumps(retargeted, separators=(",", ":")).encode()).rstrip(b"=").decode()
    payload_part, signature = token_a.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    stretched = dict(payload_a, e=int(time.time()) + 10 * 365 * 86400)
    longer = base64.urlsafe_b64encode(json.dumps(stretched, separators=(",", ":")).encode()).rstrip(b"=").decode()
    key_a = str(payload_a["k"])
    refused = {
        "retargeted": f"{body}.{signature}",
        "lifetime extended": f"{longer}.{signature}",
        "signature flipped": f"{payload_part}.{flipped}",
        "signature dropped": payload_part,
        "other secret": sign_token(b"not-the-server-secret", key_a, "config.json", ttl=600),
        "expired": sign_token(SECRET, key_a, "config.json", ttl=-5),
        "garbage": "x.y.z",
    }
    for what, token in refused.items():
        response = _download(api, token)
        assert response.status_code == 403, (what, response.status_code, response.text)
        assert "request a new" in response.json()["detail"], (what, response.text)  # says what to do
    assert _download(api, token_a).content == FILES["config.json"]  # the genuine token still works

    # Links come only from the artifact listing, which another tenant cannot read.
    with api.client(api.new_key("links-intruder")) as client:
        assert client.get(f"/v1/jobs/{job_id}/artifacts").status_code == 404
