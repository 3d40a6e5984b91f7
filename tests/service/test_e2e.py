"""End to end over real HTTP, in both modes (`any_stack`): distributed (uvicorn + Celery on Redis +
PostgreSQL + moto S3) and embedded (`spectra serve`: SQLite + filesystem broker + local store)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.service.support.client import FAST_JOB, ApiClient
from tests.service.support.stack import Stack

pytestmark = pytest.mark.integration

STAGES = ["load", "calibrate", "evaluate_before", "compress", "evaluate_after", "export", "upload"]


def _db_row(stack: Stack, job_id: str) -> Any:
    from app.models import Job

    engine = create_engine(stack.settings().database_url)
    try:
        with Session(engine) as session:
            return session.scalar(select(Job).where(Job.id == job_id))
    finally:
        engine.dispose()


def _download(artifacts: list[dict[str, Any]], folder: Path) -> None:
    """Fetch every file through its link (no API key: the link alone must work) and check its sha256."""
    for item in artifacts:
        response = httpx.get(item["url"], timeout=60)
        assert response.status_code == 200, f"{item['name']}: {response.status_code} {response.text[:300]}"
        assert len(response.content) == item["size"], item["name"]
        assert hashlib.sha256(response.content).hexdigest() == item["sha256"], item["name"]
        target = folder / item["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)


def test_job_succeeds_with_progress_and_a_loadable_artifact(any_stack: Stack, alice: ApiClient,
                                                             tmp_path: Path) -> None:
    # Zero-shot on two PIQA items rides along: the service path carries its scores into the metrics.
    job = alice.submit_ok({**FAST_JOB, "evaluation": {**FAST_JOB["evaluation"], "zeroshot": ["piqa"],
                                                      "zeroshot_limit": 2}})
    assert job["status"] == "queued"
    # The API read the model's config.json from the hub cache: the preflight estimate is there at once.
    assert job["estimate"]["params"] == 656_000 and job["estimate"]["chosen"] == "resident"
    seen: list[tuple[str, str | None]] = []
    overall: list[float] = []

    def record(j: dict[str, Any]) -> bool:
        seen.append((j["status"], j["progress"]["stage"]))
        if j["status"] == "running" and j["progress"]["overall_fraction"] is not None:
            overall.append(j["progress"]["overall_fraction"])
        return j["status"] in {"succeeded", "failed", "cancelled"}

    final = alice.wait(job["id"], record, timeout=240, what="the end of the job")
    assert final["status"] == "succeeded", f"{final}\n{any_stack.logs()}"
    assert any(status == "running" for status, _ in seen), seen
    assert overall == sorted(overall), overall  # the whole job's fraction never goes back across stages
    assert final["progress"]["eta_seconds"] == 0.0 and final["progress"]["overall_fraction"] == 1.0
    assert final["estimate"] == job["estimate"]
    stages = [e["message"] for e in alice.events(job["id"]) if e["kind"] == "stage"]
    assert stages == STAGES, stages
    assert final["started_at"] and final["finished_at"] and final["error"] is None
    assert final["progress"]["fraction"] == 1.0

    # The metrics are in the database row itself, with the before/after perplexity.
    row = _db_row(any_stack, job["id"])
    assert row.status == "succeeded" and row.attempts == 1
    assert row.metrics == final["metrics"]
    assert row.metrics["service"]["attempt"] == 1
    assert row.metrics["zeroshot_before"]["piqa"]["n"] == 2 and row.metrics["zeroshot_after"]["piqa"]["n"] == 2
    assert row.metrics["zeroshot_protocol"]["limit"] == 2
    assert row.metrics["weight_bytes_after"] < row.metrics["weight_bytes_before"]  # fp32 source, fp32 artifact

    artifacts = alice.artifacts(job["id"])
    names = {a["name"] for a in artifacts}
    assert {"config.json", "compression.json"} <= names and any(n.endswith(".safetensors") for n in names)
    _download(artifacts, tmp_path / "artifact")

    import torch

    from compression.export import load_compressed

    loaded = load_compressed(tmp_path / "artifact")  # also re-checks every sha256 in compression.json
    card = (tmp_path / "artifact" / "README.md").read_text()
    assert "base_model: raincandy-u/TinyStories-656K" in card and "| piqa acc_norm |" in card
    tokens = torch.arange(1, 33).unsqueeze(0)
    with torch.no_grad():
        logits = loaded.model(tokens).logits
    assert logits.shape == (1, 32, 2048) and torch.isfinite(logits).all()


def test_nonexistent_model_fails_with_a_message_saying_so(any_stack: Stack, alice: ApiClient) -> None:
    job = alice.submit_ok({**FAST_JOB, "model": "raincandy-u/no-such-model"})
    final = alice.wait_terminal(job["id"], timeout=120)
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "model_not_found", final["error"]
    assert "raincandy-u/no-such-model" in final["error"]["message"]
    assert "not found" in final["error"]["message"]
    assert alice.artifacts(job["id"]) == []


@pytest.mark.parametrize(
    ("patch", "field"),
    [({"target_ratio": 1.5}, "target_ratio"), ({"method": "zip"}, "method"), ({"bogus": 1}, "bogus"),
     ({"options": {"alpha": 2}}, "alpha"), ({"calibration": {"samples": 0}}, "samples")],
)
def test_invalid_body_is_422_naming_the_field(any_stack: Stack, alice: ApiClient, patch: dict[str, Any],
                                              field: str) -> None:
    response = alice.submit({**FAST_JOB, **patch})
    assert response.status_code == 422, response.text
    assert field in response.text


def test_another_tenant_gets_404_everywhere(any_stack: Stack, alice: ApiClient) -> None:
    job = alice.submit_ok({**FAST_JOB, "model": "raincandy-u/no-such-model"})
    alice.wait_terminal(job["id"], timeout=120)
    bob = any_stack.client("bob")
    for method, path in [("GET", ""), ("GET", "/events"), ("GET", "/artifacts"), ("POST", "/cancel")]:
        response = bob.http.request(method, f"/v1/jobs/{job['id']}{path}")
        assert response.status_code == 404, (path, response.text)
    assert job["id"] not in {j["id"] for j in bob.http.get("/v1/jobs").json()["items"]}
    assert httpx.get(f"{any_stack.base_url}/v1/jobs/{job['id']}", timeout=10).status_code == 401


# svd_llm over many long calibration windows: tens of seconds of Gram collection on this CPU, with a
# progress call per window, so a cancel lands while the job is busy.
SLOW_JOB: dict[str, Any] = {**FAST_JOB, "method": "svd_llm",
                            "calibration": {"source": "tinystories", "samples": 2048, "seq_len": 256}}


def test_cancel_of_a_running_job_ends_cancelled_without_artifact(any_stack: Stack, alice: ApiClient) -> None:
    job = alice.submit_ok(SLOW_JOB)
    alice.wait(job["id"], lambda j: j["status"] == "running" and j["progress"]["stage"] == "compress",
               timeout=180, what="the compress stage")
    response = alice.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code in (200, 202), response.text
    final = alice.wait_terminal(job["id"], timeout=60)
    assert final["status"] == "cancelled", f"{final}\n{any_stack.logs()}"
    assert final["error"]["code"] == "cancelled"
    assert alice.artifacts(job["id"]) == []
    row = _db_row(any_stack, job["id"])
    assert row.status == "cancelled" and row.metrics is None
