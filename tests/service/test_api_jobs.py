"""Jobs over real HTTP: create (row + queued message), validation 422s, idempotency, pagination, cancel."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from app import crud
from app.core.db import session_scope
from tests.service.api_env import (  # noqa: F401  (api: fixture)
    DATA_ROOT, MAX_BODY, MODEL_ROOT, ApiServer, api, backing_services, job_body, server_env,
)
from tests.service.support.processes import free_port, start_api


def _task_args(raw: bytes) -> list[object]:
    envelope = json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body).decode()
    return json.loads(body)[0]


def queued_job_ids(server: ApiServer) -> list[object]:
    """Job ids of the messages waiting in the gpu queue (Redis list, or filesystem broker files)."""
    if server.broker_url.startswith("redis"):
        client = redis.Redis.from_url(server.broker_url)
        raw = client.lrange("gpu", 0, -1)
        client.close()
    else:
        raw = [p.read_bytes() for p in (server.home / "broker" / "queue").glob("*.msg")]
    return [_task_args(m)[0] for m in raw]


def test_create_job_commits_row_then_enqueues(api: ApiServer) -> None:
    with api.client(api.new_key("creator")) as client:
        response = client.post("/v1/jobs", json=job_body(options={"targets": ["q_proj", "k_proj"]}))
        assert response.status_code == 202, response.text
        job = response.json()
        assert client.get(response.headers["location"]).json() == job
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["attempts"] == 0 and job["error"] is None
    assert job["progress"] == {"stage": None, "fraction": None, "message": None, "overall_fraction": None,
                               "layer": None, "layers": None, "eta_seconds": None}
    assert job["spec"]["calibration"] == {"source": "tinystories", "path": None, "texts": None, "samples": 4,
                                          "seq_len": 64, "dataset_id": None, "dataset_sha256": None}
    assert job["spec"]["options"] == {"targets": ["q_proj", "k_proj"]}
    assert job["links"]["artifacts"] == f"/v1/jobs/{job['id']}/artifacts"
    with session_scope(api.database_url) as session:
        row = crud.get_job(session, job_id=job["id"])
        assert row is not None and row.status == "queued" and row.method == "svd" and row.target_ratio == 0.2
        assert [e.message for e in crud.list_events(session, job_id=job["id"])] == ["queued"]
    assert job["id"] in queued_job_ids(api)


def _fields(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return [err["field"] for err in response.json()["detail"]]


def test_invalid_bodies_get_422_naming_the_field(api: ApiServer) -> None:
    with api.client(api.new_key("validator")) as client:
        post = lambda **kw: client.post("/v1/jobs", json=job_body(**kw))  # noqa: E731
        assert _fields(post(target_ratio=1.5)) == ["target_ratio"]
        assert _fields(post(method="magic")) == ["method"]
        assert _fields(post(surprise=1)) == ["surprise"]
        assert _fields(post(calibration={"samples": 0})) == ["calibration.samples"]
        options = post(options={"alpha": 0.5})  # alpha is an ASVD option, not an SVD one
        assert _fields(options) == ["options"] and "options.alpha" in options.json()["detail"][0]["msg"]
        for model in ("../../etc/passwd", "https://evil.example/x", "a/b; rm -rf /", "/etc/passwd",
                      f"{MODEL_ROOT}/../etc"):
            assert _fields(post(model=model)) == ["model"], model
        assert post(model=f"{MODEL_ROOT}/tiny").status_code == 202
        outside = post(calibration={"source": "file", "path": "/etc/shadow"})
        # Names the rule, not the server's folders (least disclosure).
        assert _fields(outside) == ["calibration.path"] and "data roots" in outside.json()["detail"][0]["msg"]
        assert DATA_ROOT not in outside.text
        assert post(calibration={"source": "file", "path": f"{DATA_ROOT}/calib.txt"}).status_code == 202
        assert post(calibration={"source": "texts", "texts": ["Once upon a time."] * 3}).status_code == 202
        assert _fields(post(calibration={"source": "texts", "texts": ["x"] * 257})) == ["calibration.texts"]
        assert _fields(post(calibration={"source": "texts", "texts": ["x" * 20_001]})) == ["calibration.texts.0"]
        assert _fields(post(calibration={"source": "texts"})) == ["calibration"]
        assert _fields(post(evaluation={"zeroshot": ["piqa", "mmlu"]})) == ["evaluation.zeroshot.1"]
        missing = client.post("/v1/jobs", json={"method": "svd"})
        assert sorted(_fields(missing)) == ["model", "target_ratio"]
        not_json = client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"})
        assert not_json.status_code == 422 and "detail" in not_json.json()
        huge = client.post("/v1/jobs", json=job_body(model="a" * (MAX_BODY + 10)))
        assert huge.status_code == 413 and "SPECTRA_MAX_BODY_BYTES" in huge.json()["detail"]
        chunks = (b" " * 8192 for _ in range(MAX_BODY // 8192 + 2))  # no Content-Length: counted as it arrives
        chunked = client.post("/v1/jobs", content=chunks, headers={"content-type": "application/json"})
        assert chunked.status_code == 413 and "SPECTRA_MAX_BODY_BYTES" in chunked.json()["detail"]


def test_idempotency_key_per_tenant(api: ApiServer) -> None:
    alice, bob = api.new_key("idem-alice"), api.new_key("idem-bob")
    with api.client(alice) as client:
        first = client.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "run-1"})
        again = client.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "run-1"})
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        other = client.post("/v1/jobs", json=job_body(target_ratio=0.3), headers={"Idempotency-Key": "run-1"})
        assert _fields(other) == ["header.Idempotency-Key"] and "different request body" in other.json()["detail"][0]["msg"]
        fresh = client.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "run-2"})
        assert fresh.json()["id"] != first.json()["id"]
    with api.client(bob) as client:  # keys are per tenant
        theirs = client.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "run-1"})
        assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    assert queued_job_ids(api).count(first.json()["id"]) == 1  # the replay enqueued nothing


def test_concurrent_requests_with_one_idempotency_key_make_one_job(api: ApiServer) -> None:
    key = api.new_key("idem-race")

    def submit(_: int) -> tuple[int, str]:
        with api.client(key) as client:
            response = client.post("/v1/jobs", json=job_body(seed=7), headers={"Idempotency-Key": "race"})
            return response.status_code, response.json().get("id", response.text)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(submit, range(6)))
    assert {code for code, _ in results} == {202} and len({job_id for _, job_id in results}) == 1, results
    with api.client(key) as client:
        assert [j["spec"]["seed"] for j in client.get("/v1/jobs", params={"include": "spec"}).json()["items"]] == [7]


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_concurrent_submissions_never_exceed_the_active_job_quota(kind: str, tmp_path: Path) -> None:
    """Many POSTs of one tenant at once against a quota of 3: exactly 3 jobs, the rest 429 (count-then-
    insert without a lock let every request pass the count). Nobody consumes the queue."""
    quota, attempts = 3, 16
    port = free_port()
    with backing_services(kind, tmp_path) as (database_url, broker_url):
        env = server_env(tmp_path, database_url, broker_url, SPECTRA_MAX_ACTIVE_JOBS_PER_TENANT=str(quota))
        process = start_api(env, port, tmp_path / "logs")
        try:
            server = ApiServer(kind, f"http://127.0.0.1:{port}", database_url, broker_url, tmp_path)
            key = server.new_key("quota-race")
            start = threading.Barrier(attempts)

            def submit(i: int) -> tuple[int, str]:
                with server.client(key) as client:
                    client.get("/healthz")  # connect first, so the POSTs leave together
                    start.wait(timeout=30)
                    response = client.post("/v1/jobs", json=job_body(seed=i))
                    return response.status_code, response.text

            with ThreadPoolExecutor(attempts) as pool:
                results = list(pool.map(submit, range(attempts)))
        finally:
            process.stop()
        codes = Counter(code for code, _ in results)
        assert codes == {202: quota, 429: attempts - quota}, results
        assert all(f"{quota} queued or running jobs" in text for code, text in results if code == 429)
        with session_scope(database_url) as session:
            tenant = crud.get_or_create_tenant(session, name="quota-race")
            assert crud.count_active_jobs(session, tenant_id=tenant.id) == quota


def test_list_is_newest_first_paginated_and_stable_under_inserts(api: ApiServer) -> None:
    with api.client(api.new_key("lister")) as client:
        ids = [client.post("/v1/jobs", json=job_body(method=m, options={})).json()["id"]
               for m in ["svd", "asvd", "svd", "svd_llm", "svd", "asvd", "svd"]]
        newest_first = ids[::-1]
        page1 = client.get("/v1/jobs", params={"limit": 3}).json()
        assert [j["id"] for j in page1["items"]] == newest_first[:3] and page1["next_cursor"]
        inserted = client.post("/v1/jobs", json=job_body()).json()["id"]  # must not shift later pages
        page2 = client.get("/v1/jobs", params={"limit": 3, "cursor": page1["next_cursor"]}).json()
        page3 = client.get("/v1/jobs", params={"limit": 3, "cursor": page2["next_cursor"]}).json()
        assert [j["id"] for j in page2["items"] + page3["items"]] == newest_first[3:]
        assert page3["next_cursor"] is None
        assert client.get("/v1/jobs", params={"limit": 1}).json()["items"][0]["id"] == inserted
        asvd = client.get("/v1/jobs", params={"method": "asvd"}).json()["items"]
        assert [j["id"] for j in asvd] == [ids[5], ids[1]]
        client.post(f"/v1/jobs/{ids[0]}/cancel")
        cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()["items"]
        assert [j["id"] for j in cancelled] == [ids[0]]
        assert _fields(client.get("/v1/jobs", params={"cursor": "garbage"})) == ["query.cursor"]
        assert _fields(client.get("/v1/jobs", params={"status": "sleeping"})) == ["query.status"]
        assert _fields(client.get("/v1/jobs", params={"limit": 0})) == ["query.limit"]


def test_cancel_queued_job_then_409(api: ApiServer) -> None:
    with api.client(api.new_key("canceller")) as client:
        job = client.post("/v1/jobs", json=job_body()).json()
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["finished_at"] is not None
        again = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
        events = client.get(f"/v1/jobs/{job['id']}/events").json()
        assert [e["kind"] for e in events] == ["state", "state"] and "cancelled" in events[-1]["message"]
        assert client.get(f"/v1/jobs/{job['id']}/events", params={"after": events[0]["id"]}).json() == events[1:]
        assert client.get(f"/v1/jobs/{job['id']}/artifacts").json() == []
        assert client.get("/v1/jobs/" + "f" * 32).status_code == 404


def test_cancel_running_job_sets_cancel_requested(api: ApiServer) -> None:
    with api.client(api.new_key("runner")) as client:
        job = client.post("/v1/jobs", json=job_body()).json()
        with session_scope(api.database_url) as session:
            assert crud.claim_job(session, job_id=job["id"], worker="test-worker", stale_after=60) is not None
        response = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 202
        assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True
        with session_scope(api.database_url) as session:
            assert crud.is_cancel_requested(session, job_id=job["id"])
            assert crud.claim_job(session, job_id=job["id"], worker="other", stale_after=-1) is None
