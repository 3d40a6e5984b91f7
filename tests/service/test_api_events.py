"""Server-Sent Events on GET /v1/jobs/{id}/events: a real SmolLM2 job through a real worker (every
layer, the final metrics, Last-Event-ID resume without gaps), and the embedded default (SQLite, no
Redis) following the database."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import crud
from app.core.db import session_scope
from tests.service.api_env import ApiServer, api, job_body  # noqa: F401  (fixture)
from tests.service.conftest import distributed_env
from tests.service.support.client import read_stream
from tests.service.support.infra import RedisServer, S3Server, fresh_postgres_database
from tests.service.support.stack import Stack, new_port, running_stack
from tests.support.smollm2 import smollm2_dir
from worker.progress import JobTracker

pytestmark = pytest.mark.integration

STREAM = {"Accept": "text/event-stream"}
SMOLLM2_LAYERS = 30
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smollm2_stack(tmp_path_factory: pytest.TempPathFactory, hf_home: Path, s3_server: S3Server) -> Iterator[Stack]:
    """PostgreSQL, a Redis of its own (the worker publishes through it), one worker, the local store."""
    folder = tmp_path_factory.mktemp("events")
    redis_server = RedisServer(folder / "redis", folder / "redis-logs")
    port = new_port()
    try:
        with fresh_postgres_database() as database_url:
            env = distributed_env(folder, hf_home, port, database_url, redis_server.url, s3_server)
            env["SPECTRA_MODEL_ROOTS"] = str(smollm2_dir().resolve().parent)
            # The local store: writing SmolLM2's factors to the moto S3 server took most of the test.
            for name in ("SPECTRA_ARTIFACT_STORE", "SPECTRA_S3_ENDPOINT_URL", "SPECTRA_S3_PUBLIC_ENDPOINT_URL"):
                env.pop(name)
            with running_stack(env, port, folder / "logs", embedded=False, workers=1) as stack:
                yield stack
    finally:
        redis_server.stop()


def _stream(base_url: str, key: str, job_id: str, last_event_id: str | None = None,
            stop_after: int | None = None) -> list[dict[str, str]]:
    headers = {**STREAM, "X-API-Key": key, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    with httpx.stream("GET", f"{base_url}/v1/jobs/{job_id}/events", headers=headers, timeout=300) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_stream(response, stop_after)


def _layers(events: list[dict[str, str]]) -> list[int]:
    steps = [json.loads(e["data"])["data"] or {} for e in events if e["event"] in ("stage", "progress")]
    return [step["layer"] for step in steps if step.get("layer") is not None]


def test_smollm2_job_streams_every_layer_and_its_metrics_and_resumes_without_gaps(smollm2_stack: Stack) -> None:
    alice = smollm2_stack.client("alice")
    spec: dict[str, Any] = {"model": str(smollm2_dir().resolve()), "method": "svd", "target_ratio": 0.2,
                            "evaluation": {"enabled": False},
                            "export": {"dtype": "bfloat16"}}
    job = alice.submit_ok(spec)
    base = smollm2_stack.env["SPECTRA_PUBLIC_URL"]
    # The first few events, then the client hangs up mid-job and comes back with Last-Event-ID.
    first = _stream(base, alice.key, job["id"], stop_after=3)
    rest = _stream(base, alice.key, job["id"], last_event_id=first[-1]["id"])
    seen = first + rest
    assert rest[-1]["event"] == "job", rest[-1]
    final = json.loads(rest[-1]["data"])
    assert final["status"] == "succeeded", f"{final}\n{smollm2_stack.logs()}"
    assert final["metrics"]["achieved_ratio"] > 0.19 and final["metrics"] == alice.job(job["id"])["metrics"]
    # Every event of the log exactly once, in order: nothing lost across the reconnect.
    logged = alice.events(job["id"])
    assert [int(e["id"]) for e in seen[:-1]] == [e["id"] for e in logged]
    assert [json.loads(e["data"]) for e in seen[:-1]] == logged
    assert sorted(set(_layers(seen))) == list(range(1, SMOLLM2_LAYERS + 1))  # layer i of N, i = layers done
    steps = [json.loads(e["data"])["data"] for e in seen if e["event"] == "progress"]
    assert {s["layers"] for s in steps if s["stage"] == "compress" and s["layers"] is not None} == {SMOLLM2_LAYERS}
    assert any(s["eta_seconds"] is not None for s in steps) and all(0 <= s["overall_fraction"] <= 1 for s in steps)
    states = [json.loads(e["data"])["data"]["status"] for e in seen if e["event"] == "state"]
    assert states == ["queued", "running", "succeeded"]
    # A finished job's stream: what is after the given id, then the job, then the end.
    again = _stream(base, alice.key, job["id"], last_event_id=seen[-2]["id"])
    assert [e["event"] for e in again] == ["job"] and json.loads(again[0]["data"]) == final


def test_embedded_stream_follows_the_database(api: ApiServer) -> None:
    """Progress written by a worker's JobTracker (layers faster than its throttle) reaches the
    stream, with or without Redis; a bad Last-Event-ID is a 422 and another tenant's job a 404."""
    key = api.new_key("stream")
    with api.client(key) as client:
        job_id = client.post("/v1/jobs", json=job_body()).json()["id"]
        with session_scope(api.database_url) as session:
            crud.claim_job(session, job_id=job_id, worker="w", stale_after=60)
        tracker = JobTracker(database_url=api.database_url, job_id=job_id, worker="w", heartbeat_seconds=60,
                             time_limit_seconds=60, min_interval=60)
        tracker.record("compress", 0.0, "starting")
        for done in range(1, 6):
            tracker.record("compress", done / 5 - 0.1, "half way through the next layer")  # throttled away
            tracker.record("compress", done / 5, f"layer {done}/5: truncated SVD")
        with session_scope(api.database_url) as session:
            crud.finish_job(session, job_id=job_id, status="succeeded", worker="w", metrics={"ppl_after": 3.0})
        events = _stream(api.base_url, key, job_id)
        assert _layers(events) == [1, 2, 3, 4, 5]
        assert events[-1]["event"] == "job" and json.loads(events[-1]["data"])["metrics"] == {"ppl_after": 3.0}
        # The quickstart's follower prints the steps and ends with the finished job.
        followed = subprocess.run([sys.executable, str(REPO / "scripts" / "follow_job.py"), api.base_url, job_id, key],
                                  capture_output=True, text=True, timeout=60, check=True)
        assert json.loads(followed.stdout)["status"] == "succeeded" and "layer 5/5" in followed.stderr
        bad = client.get(f"/v1/jobs/{job_id}/events", headers={**STREAM, "Last-Event-ID": "x1"})
        assert bad.status_code == 422 and "last-event-id" in bad.text.lower()
    other = api.new_key("other")
    with api.client(other) as client:
        assert client.get(f"/v1/jobs/{job_id}/events", headers=STREAM).status_code == 404
