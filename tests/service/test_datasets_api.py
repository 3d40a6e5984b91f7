"""POST/GET/DELETE /v1/datasets on a real uvicorn over PostgreSQL with small limits: every bad upload
gets its own clear 4xx, good ones are stored with their sha256, tenants never see each other's, and a
job names a dataset only of its own tenant (the API pins its sha256 into the spec)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.service.api_env import ApiServer, backing_services, job_body, server_env
from tests.service.support.processes import free_port, start_api

pytestmark = pytest.mark.integration

MAX_BYTES = 4096
PER_TENANT = 3
STORY = "Once upon a time there was a little cat. It liked to play in the sun.\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    home = tmp_path_factory.mktemp("datasets-api")
    port = free_port()
    with backing_services("postgres", home) as (database_url, broker_url):
        env = server_env(home, database_url, broker_url, SPECTRA_DATASET_MAX_BYTES=str(MAX_BYTES),
                         SPECTRA_DATASETS_PER_TENANT=str(PER_TENANT))
        process = start_api(env, port, home / "logs")
        try:
            yield ApiServer("postgres", f"http://127.0.0.1:{port}", database_url, broker_url, home)
        finally:
            process.stop()


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _upload(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": (name, data, "application/octet-stream")})


def test_good_uploads_are_stored_with_their_sha256_listed_and_deleted(server: ApiServer) -> None:
    jsonl = "".join(json.dumps({"text": STORY, "id": i}) + "\n" for i in range(3)).encode()
    parquet = _parquet(pa.table({"text": [STORY, None, STORY], "n": [1, 2, 3]}))
    with server.client(server.new_key("ds-good")) as client:
        made = {}
        for name, data, records in [("stories.txt", (STORY * 3).encode(), 3), ("s.jsonl", jsonl, 3),
                                    ("s.parquet", parquet, 2)]:
            response = _upload(client, name, data)
            assert response.status_code == 201, response.text
            body = response.json()
            assert response.headers["location"] == f"/v1/datasets/{body['id']}"
            assert (body["name"], body["size"], body["sha256"], body["records"]) == (
                name, len(data), hashlib.sha256(data).hexdigest(), records)
            assert body["format"] == name.rsplit(".", 1)[1]
            made[body["id"]] = body
        listed = client.get("/v1/datasets").json()
        assert [d["id"] for d in listed] == list(reversed(made))  # newest first
        one = next(iter(made))
        assert client.get(f"/v1/datasets/{one}").json() == made[one]
        stored = list((server.home / "artifacts").rglob("data.*"))  # the local store holds the bytes
        assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in stored) == sorted(
            d["sha256"] for d in made.values())

        assert client.delete(f"/v1/datasets/{one}").status_code == 204
        assert client.get(f"/v1/datasets/{one}").status_code == 404
        assert client.delete(f"/v1/datasets/{one}").status_code == 404
        assert len(list((server.home / "artifacts").rglob("data.*"))) == 2


@pytest.mark.parametrize(("name", "data", "status", "words"), [
    ("empty.txt", b"", 422, "is empty"),
    ("blank.txt", b"\n  \n\t\n", 422, "has no text"),
    ("model.txt", b"\x00\x01\x02weights" * 10, 422, "NUL byte"),
    ("latin1.txt", "caf\u00e9 au lait\n".encode("latin-1"), 422, "not UTF-8"),
    ("utf16.txt", "hello\n".encode("utf-16"), 422, "UTF-16"),
    ("big.txt", b"a" * (MAX_BYTES + 1), 413, "SPECTRA_DATASET_MAX_BYTES"),
    ("notes.csv", b"text\nhello\n", 415, "unknown dataset file type"),
    ("noext", b"hello\n", 415, "unknown dataset file type"),
    ("bad.jsonl", b'{"text": "fine"}\n{"text": oops}\n', 422, "line 2 is not valid JSON"),
    ("field.jsonl", b'{"body": "no text field"}\n', 422, "line 1 has no string field 'text'"),
    ("fake.parquet", b"this is not parquet at all", 422, "not a readable parquet file"),
    ("column.parquet", _parquet(pa.table({"body": ["a story"]})), 422, "has no column 'text' (its columns: body)"),
    ("numbers.parquet", _parquet(pa.table({"text": [1, 2]})), 422, "not strings"),
    ("nulls.parquet", _parquet(pa.table({"text": pa.array([None, " "], pa.string())})), 422, "has no text"),
    ("misnamed.txt", _parquet(pa.table({"text": ["a"]})), 422, "give it the .parquet extension"),
])
def test_bad_uploads_get_a_clear_4xx(server: ApiServer, name: str, data: bytes, status: int, words: str) -> None:
    with server.client(server.new_key(f"ds-bad-{name}")) as client:
        response = _upload(client, name, data)
        assert response.status_code == status, response.text
        assert words in response.json()["detail"], response.text
        assert client.get("/v1/datasets").json() == []  # nothing half-made


def test_a_body_far_over_the_limit_is_refused_before_it_is_read(server: ApiServer) -> None:
    with server.client(server.new_key("ds-huge")) as client:
        response = _upload(client, "huge.txt", b"a" * (MAX_BYTES + 200_000))
    assert response.status_code == 413 and "SPECTRA_DATASET_MAX_BYTES" in response.text


def test_too_many_datasets_is_409_until_one_is_deleted(server: ApiServer) -> None:
    with server.client(server.new_key("ds-many")) as client:
        ids = [_upload(client, f"s{i}.txt", STORY.encode()).json()["id"] for i in range(PER_TENANT)]
        refused = _upload(client, "one-more.txt", STORY.encode())
        assert refused.status_code == 409 and "SPECTRA_DATASETS_PER_TENANT" in refused.json()["detail"]
        assert client.delete(f"/v1/datasets/{ids[0]}").status_code == 204
        assert _upload(client, "one-more.txt", STORY.encode()).status_code == 201


def test_another_tenants_dataset_is_404_and_cannot_be_used_by_a_job(server: ApiServer) -> None:
    with server.client(server.new_key("ds-owner")) as owner, server.client(server.new_key("ds-other")) as other:
        dataset = _upload(owner, "mine.txt", (STORY * 20).encode()).json()
        for method in ("GET", "DELETE"):
            foreign = other.request(method, f"/v1/datasets/{dataset['id']}")
            ghost = other.request(method, f"/v1/datasets/{'0' * 32}")
            assert foreign.status_code == ghost.status_code == 404
            assert foreign.json()["detail"] == f"dataset {dataset['id']} not found"
        assert other.get("/v1/datasets").json() == []

        calibration = {"source": "dataset", "dataset_id": dataset["id"], "samples": 4, "seq_len": 64}
        refused = other.post("/v1/jobs", json=job_body(method="svd_llm", calibration=calibration))
        assert refused.status_code == 422 and f"no dataset {dataset['id']} for this tenant" in refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "calibration", "dataset_id"]

        evaluation = {"corpus": "dataset", "dataset_id": dataset["id"], "seq_len": 64, "max_windows": 2}
        refused = other.post("/v1/jobs", json=job_body(evaluation=evaluation))
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "evaluation", "dataset_id"]

        accepted = owner.post("/v1/jobs", json=job_body(method="svd_llm", calibration=calibration,
                                                        evaluation=evaluation))
        assert accepted.status_code == 202, accepted.text
        spec = accepted.json()["spec"]  # pinned in both places
        assert spec["calibration"]["dataset_sha256"] == spec["evaluation"]["dataset_sha256"] == dataset["sha256"]
        wrong = owner.post("/v1/jobs", json=job_body(
            method="svd_llm", calibration={**calibration, "dataset_sha256": "f" * 64}))
        assert wrong.status_code == 422 and dataset["sha256"] in wrong.text
        no_id = owner.post("/v1/jobs", json=job_body(method="svd_llm", calibration={"source": "dataset"}))
        assert no_id.status_code == 422 and "dataset_id is required" in no_id.text
