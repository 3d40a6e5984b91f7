"""An uploaded dataset calibrates a real TinyStories job in both modes (moto S3 + Celery on Redis +
PostgreSQL, and `spectra serve` with the local store): the worker downloads it, checks its sha256 and
hands the library the text; the job's calibration record names the dataset id and sha256. A dataset
deleted, foreign or altered after submission fails the job by name instead of running on other text."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import SHARED
from tests.service.support.auth import tenant_of
from tests.service.support.client import FAST_JOB, ApiClient
from tests.service.support.stack import Stack

pytestmark = pytest.mark.integration


def _stories() -> list[str]:
    text = (SHARED / "data" / "tinystories" / "TinyStories-valid.head16k.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:40]


def _parquet(stories: list[str]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": stories, "source": ["valid"] * len(stories)}), buffer)
    return buffer.getvalue()


def _upload(client: ApiClient, name: str, data: bytes) -> dict[str, Any]:
    response = client.http.post("/v1/datasets", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _job(dataset_id: str, evaluate_on_it: bool = False) -> dict[str, Any]:
    # svd_llm: a method that needs calibration (FAST_JOB's plain svd reads none).
    job = {**FAST_JOB, "method": "svd_llm",
           "calibration": {"source": "dataset", "dataset_id": dataset_id, "samples": 4, "seq_len": 64}}
    if evaluate_on_it:
        job["evaluation"] = {"corpus": "dataset", "dataset_id": dataset_id, "seq_len": 128, "max_windows": 2}
    return job


def test_uploaded_parquet_calibrates_and_evaluates_a_job_whose_records_carry_its_sha256(
        any_stack: Stack, alice: ApiClient) -> None:
    stories = _stories()
    dataset = _upload(alice, "stories.parquet", _parquet(stories))
    assert dataset["records"] == len(stories) > 10
    job = alice.submit_ok(_job(dataset["id"], evaluate_on_it=True))
    final = alice.wait_terminal(job["id"], timeout=240)
    assert final["status"] == "succeeded", f"{final}\n{any_stack.logs()}"
    record = final["metrics"]["calibration"]
    assert (record["source"], record["dataset_id"], record["dataset_sha256"]) == (
        "dataset", dataset["id"], dataset["sha256"])
    assert (record["file"], record["split"], record["tokens"]) == (dataset["id"], "uploaded dataset", 4 * 64)
    protocol = final["metrics"]["protocol"]  # the same dataset was the held-out text too
    assert (protocol["corpus"], protocol["dataset_id"], protocol["dataset_sha256"], protocol["windows"]) == (
        "dataset", dataset["id"], dataset["sha256"], 2)
    assert final["metrics"]["ppl_before"] > 1 and final["metrics"]["ppl_after"] > 1


def test_the_worker_refuses_a_deleted_foreign_or_altered_dataset(any_stack: Stack, alice: ApiClient,
                                                                tmp_path: Path) -> None:
    """worker.datasets against this stack's real database and store (S3 or the local folder)."""
    from worker.datasets import DatasetUnavailable, fetch_datasets
    from worker.outcome import classify

    settings = any_stack.settings()
    tenant_id = tenant_of(settings.database_url, alice.key).id
    lines = [f"Tom had a red ball number {i}.\u2028He liked it." for i in range(50)]
    dataset = _upload(alice, "short.jsonl", "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                                    for t in lines).encode())
    spec = {"calibration": {"source": "dataset", "dataset_id": dataset["id"], "dataset_sha256": dataset["sha256"]}}

    files = fetch_datasets(settings, spec, tenant_id, tmp_path / "ok")
    # What the library reads: one JSON object per line, a U+2028 inside a text no longer splits it.
    written = files[dataset["id"]].read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in written] == lines

    altered = {"calibration": {**spec["calibration"], "dataset_sha256": "0" * 64}}
    with pytest.raises(DatasetUnavailable, match=f"now has sha256 {dataset['sha256']}"):
        fetch_datasets(settings, altered, tenant_id, tmp_path / "altered")
    with pytest.raises(DatasetUnavailable, match="was deleted"):
        fetch_datasets(settings, spec, tenant_id + 1000, tmp_path / "foreign")
    assert alice.http.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    with pytest.raises(DatasetUnavailable, match="was deleted") as raised:
        fetch_datasets(settings, spec, tenant_id, tmp_path / "deleted")
    assert classify(raised.value).code == "dataset_unavailable"
    refused = alice.submit(_job(dataset["id"]))
    assert refused.status_code == 422 and "no dataset" in refused.text
