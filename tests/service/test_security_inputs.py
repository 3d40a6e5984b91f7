"""Hostile input over real HTTP, and secrets at rest and in logs.

Model ids and calibration paths that try to escape (traversal, encoded traversal, absolute paths
outside the allowed roots, URLs, shell metacharacters, over-long ids) are refused with a 422 naming
the field; odd job ids are plain 404s on every database; oversized bodies get 413; every 4xx says
what to fix. API keys exist in the database only as hashes, compared in constant time; the key,
the HMAC secret, the S3 secret and download tokens never reach the API's log output.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import httpx
import pytest
from sqlalchemy import text

from fastapi.testclient import TestClient

from app import crud, security
from app.core.config import Settings
from app.core.db import get_engine, session_scope
from app.main import create_app
from app.storage import StoredFile, job_prefix
from compression.specs import JobSpec
from tests.service.api_env import ADMIN_KEY, DATA_ROOT, MAX_BODY, OPERATOR, MODEL_ROOT, ApiServer, api, job_body, server_env  # noqa: F401
from tests.service.support.auth import authenticate_keys
from tests.service.support.processes import Process, free_port, wait_until
from tests.service.test_security_matrix import succeeded_job, token_payload

LINK_TTL = 5  # seconds, for the server whose links we watch expire

ESCAPING_MODELS = [
    "../../etc/passwd", "org/../x", "/etc/passwd", f"{MODEL_ROOT}/../../etc/passwd", f"{MODEL_ROOT}-evil/x",
    "%2e%2e/%2e%2e/etc/passwd", "org/%2e%2e/x", "..%2f..%2fetc%2fpasswd", "%252e%252e/x",
    "https://huggingface.co/x/y", "file:///x", "hf://org/name",
    "a;rm -rf /", "$(id)", "`id`", "org/name\nrm", "org/name|sh", "org/name&&id", "org/na\x00me", "~/x",
    "org/" + "n" * 300, "/" + "a/" * 600,
]
ESCAPING_CALIBRATION = [
    "/etc/passwd", f"{DATA_ROOT}-evil/x.txt", f"{DATA_ROOT}/../../etc/passwd", "../../etc/passwd",
    "%2e%2e/%2e%2e/etc/passwd", "a;rm -rf /", "$(id).txt", "file:///etc/passwd",
]


def _single_error(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert isinstance(errors, list) and len(errors) == 1, errors
    assert errors[0]["msg"], errors
    return errors[0]


def _job_count(server: ApiServer, key: str) -> int:
    with server.client(key) as client:
        return len(client.get("/v1/jobs", params={"limit": 200}).json()["items"])


def test_model_ids_that_could_escape_are_refused(api: ApiServer) -> None:
    key = api.new_key("escaping-models")
    with api.client(key) as client:
        for model in ESCAPING_MODELS:
            error = _single_error(client.post("/v1/jobs", json=job_body(model=model)))
            assert error["field"] == "model", (model, error)
            assert any(hint in str(error["msg"]) for hint in ("Hugging Face id", "allowed root", "model roots", "'..'", "only letters, digits")), (model, error)
        traversal = _single_error(client.post("/v1/jobs", json=job_body(revision="../../refs")))
        assert traversal["field"] == "revision" and "branch, tag or commit" in str(traversal["msg"])
        assert _job_count(api, key) == 0  # nothing refused was stored
        for model in (f"{MODEL_ROOT}/tinystories", "raincandy-u/TinyStories-656K", "TinyStories-656K"):
            assert client.post("/v1/jobs", json=job_body(model=model)).status_code == 202, model  # the control
    assert _job_count(api, key) == 3


def test_calibration_paths_outside_the_data_roots_are_refused(api: ApiServer) -> None:
    key = api.new_key("escaping-calibration")
    with api.client(key) as client:
        for path in ESCAPING_CALIBRATION:
            calibration = {"source": "file", "path": path, "samples": 4, "seq_len": 64}
            error = _single_error(client.post("/v1/jobs", json=job_body(calibration=calibration)))
            # Both the spec's own check (traversal, odd characters) and the roots check name the path field.
            assert error["field"] == "calibration.path", (path, error)
            assert "calibration.path" in str(error["msg"]) or "data roots" in str(error["msg"]), (path, error)
            assert DATA_ROOT not in str(error["msg"]), (path, error)  # the server's folders stay unnamed
            if path.startswith("/") and ".." not in path:
                assert error["field"] == "calibration.path" and "data roots" in str(error["msg"]), (path, error)
        assert _job_count(api, key) == 0
        inside = {"source": "file", "path": f"{DATA_ROOT}/calib.txt", "samples": 4, "seq_len": 64}
        assert client.post("/v1/jobs", json=job_body(calibration=inside)).status_code == 202


def test_odd_job_ids_and_cursors_are_4xx_on_every_database(api: ApiServer) -> None:
    odd = ["%00", "a%00b", "%C3%A9t%C3%A9", "x" * 5000, "%2e%2e", "'%20OR%201=1--", "%F0%9F%92%A5"]
    with api.client(api.new_key("odd-ids")) as client:
        for job_id in odd:
            for method, suffix in [("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/artifacts")]:
                response = client.request(method, f"/v1/jobs/{job_id}{suffix}")
                assert response.status_code == 404, (job_id, suffix, response.status_code, response.text[:200])
                assert "not found" in response.json()["detail"]
        nul_cursor = base64.urlsafe_b64encode(json.dumps({"t": "2026-01-01T00:00:00+00:00", "id": "a\x00b"}).encode())
        response = client.get("/v1/jobs", params={"cursor": nul_cursor.decode().rstrip("=")})
        assert response.status_code == 422 and "next_cursor" in response.json()["detail"][0]["msg"]


def test_oversized_bodies_get_413(api: ApiServer) -> None:
    big = json.dumps(job_body(options={"targets": ["q_proj"] * (MAX_BODY // 8)})).encode()
    assert len(big) > MAX_BODY
    with api.client(api.new_key("big-bodies")) as client:
        declared = client.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"})
        chunked = client.post("/v1/jobs", content=iter([big[i:i + 8192] for i in range(0, len(big), 8192)]),
                              headers={"Content-Type": "application/json"})
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert "SPECTRA_MAX_BODY_BYTES" in response.json()["detail"] and "send less" in response.json()["detail"]


def _client_errors(api: ApiServer, key: str, tmp_path: Path) -> Iterator[tuple[str, httpx.Response, int, str]]:
    """(what, response, expected status, words that tell the caller what to change)."""
    base = api.base_url
    done = succeeded_job(api, key, tmp_path / "artifacts")
    with api.client(key) as client:
        token = parse_qs(urlparse(client.get(f"/v1/jobs/{done}/artifacts").json()[0]["url"]).query)["token"][0]
        yield "no key", httpx.get(f"{base}/v1/jobs"), 401, "X-API-Key"
        yield "wrong key", httpx.get(f"{base}/v1/jobs", headers={"X-API-Key": "sk_" + "x" * 43}), 401, "X-API-Key"
        yield "no such route", client.get("/jobs"), 404, "/v1"
        yield "no such job", client.get(f"/v1/jobs/{uuid.uuid4().hex}"), 404, "not found"
        yield "wrong method", client.delete("/v1/jobs"), 405, "use GET or POST"
        yield "cancel finished", client.post(f"/v1/jobs/{done}/cancel"), 409, "only queued or running"
        yield "not JSON", client.post("/v1/jobs", content=b"{", headers={"Content-Type": "application/json"}), 422, "send a JSON object"
        yield "not UTF-8", client.post("/v1/jobs", content=b"\xff\xfe", headers={"Content-Type": "application/json"}), 422, "send a JSON object"
        yield "unknown field", client.post("/v1/jobs", json=job_body(colour="red")), 422, "Extra inputs are not permitted"
        yield "bad ratio", client.post("/v1/jobs", json=job_body(target_ratio=2)), 422, "less than"
        yield "bad method", client.post("/v1/jobs", json=job_body(method="zip")), 422, "'svd'"
        yield "bad limit", client.get("/v1/jobs", params={"limit": 0}), 422, "greater than or equal to 1"
        yield "bad status", client.get("/v1/jobs", params={"status": "done"}), 422, "'queued'"
        yield "bad cursor", client.get("/v1/jobs", params={"cursor": "nope"}), 422, "next_cursor"
        yield "bad after", client.get(f"/v1/jobs/{done}/events", params={"after": 2**40}), 422, "less than or equal"
        client.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "k-1"})
        yield "key reused", client.post("/v1/jobs", json=job_body(target_ratio=0.3), headers={"Idempotency-Key": "k-1"}), 422, "use a new key"
        yield "tampered token", httpx.get(f"{base}/v1/artifacts/download", params={"token": token[:-3] + "xyz"}), 403, "request a new link"
        yield "no token", httpx.get(f"{base}/v1/artifacts/download"), 422, "Field required"
        yield "body too big", client.post("/v1/jobs", content=b"x" * (MAX_BODY + 1)), 413, "send less"


def test_every_4xx_says_what_to_fix(api: ApiServer, tmp_path: Path) -> None:
    for what, response, status, hint in _client_errors(api, api.new_key("error-messages"), tmp_path):
        assert response.status_code == status, (what, response.status_code, response.text)
        detail = response.json()["detail"]
        assert detail, what
        if isinstance(detail, list):  # validation errors: each names its field and says what is wrong
            assert all(e["field"] and e["msg"] for e in detail), (what, detail)
            detail = " ".join(str(e["msg"]) for e in detail)
        assert hint in detail, (what, hint, detail)


def test_keys_are_stored_only_as_hashes_and_compared_in_constant_time(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = api.new_key("hash-only")
    secret_part = key[security.SHOWN_PREFIX_LEN:]  # the prefix is shown in listings by design
    with get_engine(api.database_url).connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_keys")).all()
        dump = json.dumps([[str(v) for v in row] for row in rows])
    assert security.hash_api_key(key) in dump  # the row is there...
    assert secret_part not in dump and key not in dump  # ...without the key
    if api.kind == "sqlite":  # and not anywhere in the database file (pages, journal)
        raw = b"".join(p.read_bytes() for p in api.home.glob("spectra.db*"))
        assert raw.count(security.hash_api_key(key).encode()) >= 1 and secret_part.encode() not in raw

    compared: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: object, b: object) -> bool:
        compared.append((a, b))
        return real(a, b)  # type: ignore[arg-type]

    near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    tenants, _ = authenticate_keys(api.database_url, [key, near_miss])  # the API's own check, uncached
    monkeypatch.undo()
    assert [t and t.name for t in tenants] == ["hash-only", None]
    # The presented key is hashed, then checked with compare_digest (after an indexed lookup by
    # that hash, whose timing can reveal nothing about the key itself).
    assert compared == [(security.hash_api_key(key), security.hash_api_key(key))]


def test_revoked_and_malformed_keys_are_refused_malformed_ones_without_a_query(api: ApiServer) -> None:
    key, revoked = api.new_key("refusals"), api.new_key("refusals")
    with session_scope(api.database_url) as session:
        prefix = revoked[:security.SHOWN_PREFIX_LEN]
        assert crud.revoke_api_key(session, prefix=prefix, tenant_name="refusals") == 1
    tenants, queries = authenticate_keys(api.database_url, [key, revoked])
    assert [t and t.name for t in tenants] == ["refusals", None] and queries == 2
    malformed = ["", "sk_", "sk_short", "pk_" + key[3:], "sk_" + "a" * 200, key + "\x00" * 100]
    tenants, queries = authenticate_keys(api.database_url, malformed)
    assert tenants == [None] * len(malformed) and queries == 0  # refused by their shape alone


def test_secrets_never_reach_the_logs(tmp_path: Path) -> None:
    """Our own uvicorn at DEBUG with the access log on (as `spectra serve` runs it, at info), the S3
    credentials set, a rate limit; then every kind of request, and a grep of everything it printed."""
    hidden = {
        "SPECTRA_SIGNING_SECRET": "hmac-" + secrets.token_hex(16),
        "SPECTRA_S3_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "SPECTRA_S3_SECRET_ACCESS_KEY": "s3secret-" + secrets.token_hex(16),
    }
    database_url = f"sqlite:///{tmp_path / 'spectra.db'}"
    env = server_env(tmp_path, database_url, "filesystem://", SPECTRA_RATE_LIMIT_PER_MINUTE="30",
                     SPECTRA_LINK_TTL_SECONDS=str(LINK_TTL), **hidden)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "debug"]
    process = Process(f"noisy-{port}", command, env, tmp_path / "logs")
    server = ApiServer("sqlite", f"http://127.0.0.1:{port}", database_url, "filesystem://", tmp_path)
    try:
        wait_until(lambda: _answers(f"{server.base_url}/healthz"), 60, "the API", process=process)
        key, throttled = server.new_key("logged"), server.new_key("throttled")
        tokens = _exercise(server, key, throttled, hidden["SPECTRA_SIGNING_SECRET"].encode(), tmp_path)
    finally:
        process.stop()
    log = process.log_text()
    for line in ('"GET /v1/jobs HTTP/1.1" 200', '"GET /v1/jobs HTTP/1.1" 401', '"GET /v1/jobs HTTP/1.1" 429'):
        assert line in log, line  # the access log was on, refusals included
    leaks = [key, key[security.SHOWN_PREFIX_LEN:], throttled, *hidden.values(), *tokens,
             *(t.split(".")[1] for t in tokens)]
    leaks.remove(hidden["SPECTRA_S3_ACCESS_KEY_ID"])  # an access key id is an identifier, not a secret
    found = [s for s in leaks if s in log or quote(s) in log]
    assert not found, f"secrets in the API log: {found}"
    assert log.count("/v1/artifacts/download?token=[redacted]") >= len(tokens)  # logged, minus the token


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _exercise(server: ApiServer, key: str, throttled: str, signing: bytes, tmp_path: Path) -> list[str]:
    """Requests of every kind (successes, refusals, downloads, a rate limit); returns the tokens used."""
    with server.client(key) as client:
        job = client.post("/v1/jobs", json=job_body()).json()["id"]
        for path in ("/v1/jobs", f"/v1/jobs/{job}", f"/v1/jobs/{job}/events", "/v1/methods", "/readyz", "/metrics"):
            operator = OPERATOR if path in ("/readyz", "/metrics") else None
            assert client.get(path, headers=operator).status_code == 200, path
        assert client.post(f"/v1/jobs/{job}/cancel").status_code == 202
        pasted = client.post("/v1/jobs", json=job_body(model=f"{key}?"))  # a key pasted into the wrong field
        assert pasted.status_code == 422 and key not in pasted.text  # not echoed back either
        done = succeeded_job(server, key, tmp_path / "artifacts", secret=signing)
        listed = client.get(f"/v1/jobs/{done}/artifacts").json()
    assert {a["expires_in"] for a in listed} == {LINK_TTL}
    urls = [a["url"] for a in listed]
    tokens = [parse_qs(urlparse(u).query)["token"][0] for u in urls]
    for url in urls:
        assert httpx.get(url, timeout=20).status_code == 200
    assert httpx.get(urls[0][:-4] + "AAAA", timeout=20).status_code == 403
    near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert httpx.get(f"{server.base_url}/v1/jobs", headers={"X-API-Key": near_miss}).status_code == 401
    with server.client(throttled) as client:
        answers = [client.get("/v1/jobs") for _ in range(31)]
    limited = answers[-1]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "retry after" in limited.json()["detail"]
    expiry = max(int(token_payload(t)["e"]) for t in tokens)  # type: ignore[call-overload]
    time.sleep(max(0.0, expiry + 1.1 - time.time()))
    gone = httpx.get(urls[0], timeout=20)  # the real link, once its time is up
    assert gone.status_code == 403 and "expired" in gone.json()["detail"]
    return tokens


def test_s3_credentials_stay_out_of_logs_and_answers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The S3 store in use (presigned links, a failing ping) with every logger at DEBUG, botocore's too."""
    s3_secret, signing = "s3secret-" + secrets.token_hex(16), "hmac-" + secrets.token_hex(16)
    settings = Settings(home=tmp_path, signing_secret=signing, artifact_store="s3://spectra-bucket/deploy",  # type: ignore[arg-type]
                        admin_key=ADMIN_KEY,  # type: ignore[arg-type]
                        s3_endpoint_url=f"http://127.0.0.1:{free_port()}", s3_access_key_id="AKIATESTKEYID",
                        s3_secret_access_key=s3_secret)  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        with session_scope(settings.database_url or "") as session:
            key_row, tenant_key = crud.create_api_key(session, tenant_name="s3-logs")
            spec = JobSpec.model_validate(job_body()).model_dump(mode="json")
            job_id = crud.create_job(session, tenant_id=key_row.tenant_id, spec=spec).id
            crud.claim_job(session, job_id=job_id, worker="w", stale_after=60)
            stored = StoredFile(name="model.safetensors", size=3, sha256="0" * 64,
                                key=f"{job_prefix(key_row.tenant_id, job_id)}/model.safetensors")
            assert crud.finish_job(session, job_id=job_id, status="succeeded", artifacts=[stored], worker="w")
        ready = client.get("/readyz", headers=OPERATOR)
        listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers={"X-API-Key": tenant_key})
    assert ready.status_code == 503 and ready.json()["checks"]["store"]["ok"] is False
    assert listed.status_code == 200 and "X-Amz-Signature=" in listed.json()[0]["url"]  # the store was used
    assert "botocore" in caplog.text  # its DEBUG output was captured
    for secret in (s3_secret, signing, tenant_key):
        assert secret not in caplog.text and secret not in ready.text + listed.text
