"""Faults with real processes (issue #6): a SIGKILLed worker, a Redis restart, a job past its time limit.

These run on a stack of their own (own redis-server, own PostgreSQL database) because they kill
things. Timings: heartbeat 1 s, stale after 8 s, sweep every 2 s (tests/service/support/stack.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import distributed_env
from tests.service.support.client import FAST_JOB, ApiClient
from tests.service.support.infra import RedisServer, S3Server, fresh_postgres_database
from tests.service.support.stack import Stack, new_port, running_stack
from tests.support.smollm2 import smollm2_dir

pytestmark = pytest.mark.integration

# A few seconds of whitened SVD with a progress call per calibration window.
MEDIUM_JOB: dict[str, Any] = {**FAST_JOB, "method": "svd_llm",
                              "calibration": {"source": "tinystories", "samples": 64, "seq_len": 128}}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    folder = tmp_path_factory.mktemp("redis")
    server = RedisServer(folder / "data", folder / "logs")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, hf_home: Path, s3_server: S3Server,
           redis_server: RedisServer) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("faults")
    port = new_port()
    with fresh_postgres_database() as database_url:
        env = distributed_env(home, hf_home, port, database_url, redis_server.url, s3_server)
        env["SPECTRA_MODEL_ROOTS"] = str(smollm2_dir().parent)  # the out-of-memory test's model
        with running_stack(env, port, home / "logs", embedded=False, workers=0) as stack:
            yield stack


def _events(client: ApiClient, job_id: str) -> list[str]:
    return [e["message"] for e in client.events(job_id)]


def _keys(s3: S3Server, job_id: str) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=s3.bucket)
    return [o["Key"] for o in listing.get("Contents", []) if f"/jobs/{job_id}/" in o["Key"]]


def test_sigkilled_worker_job_is_redelivered_and_completes_exactly_once(faulty: Stack, s3_server: S3Server) -> None:
    first = faulty.only_worker("doomed")
    alice = faulty.client("alice")
    job = alice.submit_ok(MEDIUM_JOB)
    alice.wait(job["id"], lambda j: j["status"] == "running" and j["progress"]["stage"] == "compress",
               timeout=120, what="the job to be compressing")
    first.kill()  # SIGKILL the whole worker: main process and pool child, mid-job
    faulty.start_worker("rescuer")
    final = alice.wait_terminal(job["id"], timeout=180)
    assert final["status"] == "succeeded", f"{final}\n{faulty.logs()}"
    assert final["attempts"] == 2
    events = _events(alice, job["id"])
    assert "worker lost after attempt 1; re-queued" in events
    assert events.count("succeeded") == 1
    artifacts = alice.artifacts(job["id"])
    assert len({a["name"] for a in artifacts}) == len(artifacts) > 0
    # Only the successful attempt's upload exists; the killed attempt never got to upload.
    keys = _keys(s3_server, job["id"])
    assert keys and all("/attempt-2/" in k for k in keys), keys


def test_redis_restart_loses_no_job(faulty: Stack, redis_server: RedisServer) -> None:
    if not any(w.alive() for w in faulty.workers):
        faulty.only_worker("steady")
    alice = faulty.client("alice")
    running = alice.submit_ok(MEDIUM_JOB)
    waiting = [alice.submit_ok(FAST_JOB) for _ in range(2)]
    alice.wait(running["id"], lambda j: j["status"] == "running", timeout=120, what="the first job to run")
    redis_server.restart()  # no persistence: the two queued messages are gone
    for job in [running, *waiting]:
        final = alice.wait_terminal(job["id"], timeout=180)
        assert final["status"] == "succeeded", f"{final}\n{faulty.logs()}"


def test_job_past_its_time_limit_fails_with_that_reason(faulty: Stack) -> None:
    faulty.only_worker("hurried", SPECTRA_JOB_TIME_LIMIT_SECONDS="6")
    alice = faulty.client("alice")
    slow = {**MEDIUM_JOB, "calibration": {"source": "tinystories", "samples": 4096, "seq_len": 256}}
    job = alice.submit_ok(slow)
    final = alice.wait_terminal(job["id"], timeout=120)
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "time_limit"
    assert "time limit of 6 s" in final["error"]["message"]
    assert final["attempts"] == 1  # not retried
    assert alice.artifacts(job["id"]) == []


def test_store_failing_at_upload_retries_then_fails_cleanly(faulty: Stack, s3_server: S3Server) -> None:
    """The worker's store is a bucket that does not exist: every upload fails. The job is retried
    (transient), then failed with the reason, and no artifact is ever listed."""
    faulty.only_worker("no-bucket", SPECTRA_ARTIFACT_STORE="s3://spectra-no-such-bucket/x")
    alice = faulty.client("alice")
    job = alice.submit_ok(FAST_JOB)
    listed: list[dict[str, Any]] = []

    def ended(j: dict[str, Any]) -> bool:
        listed.extend(alice.artifacts(j["id"]))  # polled throughout: nothing may ever show up
        return j["status"] in {"succeeded", "failed", "cancelled"}

    final = alice.wait(job["id"], ended, timeout=180, what="the end of the job")
    assert final["status"] == "failed", final
    assert listed == []
    assert final["error"]["code"] == "upload_failed" and "NoSuchBucket" in final["error"]["message"]
    assert final["attempts"] == 3  # the first try and two bounded retries
    assert _keys(s3_server, job["id"]) == []


def test_job_out_of_memory_fails_once_and_is_not_retried(faulty: Stack, s3_server: S3Server) -> None:
    """A real allocation failure: the worker caps a job's memory (SPECTRA_WORKER_JOB_MEMORY_MB=200)
    below what SmolLM2-135M's 538 MB of float32 weights need. The job fails `out_of_memory` on its
    first attempt, stays failed through several sweeps (no re-delivery), uploads nothing, and the
    worker serves on."""
    worker = faulty.only_worker("cramped", SPECTRA_WORKER_JOB_MEMORY_MB="200")
    alice = faulty.client("alice")
    too_big = {**FAST_JOB, "model": str(smollm2_dir())}
    job = alice.submit_ok(too_big)
    final = alice.wait_terminal(job["id"], timeout=120)
    assert final["status"] == "failed", f"{final}\n{faulty.logs()}"
    assert final["error"]["code"] == "out_of_memory", final["error"]
    assert "ran out of memory" in final["error"]["message"] and "smaller model" in final["error"]["message"]
    time.sleep(6)  # three sweeps (every 2 s): a failed job is never sent again
    again = alice.job(job["id"])
    assert (again["status"], again["attempts"]) == ("failed", 1), again
    assert alice.artifacts(job["id"]) == [] and _keys(s3_server, job["id"]) == []
    assert worker.alive()
    small = alice.submit_ok(FAST_JOB)  # TinyStories fits in 200 MB: the same worker completes it
    assert alice.wait_terminal(small["id"], timeout=120)["status"] == "succeeded"


# SmolLM2's 30 layers, so a SIGKILL lands between layers; small calibration keeps each layer short.
LAYERED_JOB: dict[str, Any] = {**FAST_JOB, "method": "svd_llm", "target_ratio": 0.2,
                               "calibration": {"source": "tinystories", "samples": 4, "seq_len": 64},
                               "evaluation": {"enabled": False}}


def _finished_layer(job: dict[str, Any]) -> int:
    match = re.match(r"layer (\d+)/30:", (job.get("progress") or {}).get("message") or "")
    return int(match.group(1)) if match else 0


def test_sigkilled_worker_resumes_after_the_last_finished_layer(faulty: Stack, s3_server: S3Server) -> None:
    """Kill the worker after layer k of a SmolLM2 svd_llm job: the re-delivered attempt says where it
    resumed (after k, not at 1) and its weights are byte for byte those of an uninterrupted run."""
    spec = {**LAYERED_JOB, "model": str(smollm2_dir())}
    first = faulty.only_worker("killed-mid-layers")
    alice = faulty.client("alice")
    job = alice.submit_ok(spec)
    seen = alice.wait(job["id"], lambda j: _finished_layer(j) >= 3, timeout=240, what="layer 3 to finish")
    first.kill()
    killed_after = _finished_layer(seen)
    faulty.start_worker("resumer")
    final = alice.wait_terminal(job["id"], timeout=300)
    assert final["status"] == "succeeded" and final["attempts"] == 2, f"{final}\n{faulty.logs()}"
    resumed = [m for m in _events(alice, job["id"]) if m.startswith("resumed at layer")]
    assert len(set(resumed)) == 1, _events(alice, job["id"])  # one resume (its message may be logged twice)
    resumed_at = int(re.match(r"resumed at layer (\d+) of 30", resumed[0]).group(1))  # type: ignore[union-attr]
    assert killed_after + 1 <= resumed_at <= 30
    whole = alice.submit_ok(spec)  # the same spec, never interrupted
    assert alice.wait_terminal(whole["id"], timeout=300)["status"] == "succeeded"
    assert not any(m.startswith("resumed") for m in _events(alice, whole["id"]))

    def weights(job_id: str) -> dict[str, str]:
        return {a["name"]: a["sha256"] for a in alice.artifacts(job_id) if a["name"].endswith(".safetensors")}

    assert weights(job["id"]) == weights(whole["id"]) != {}
