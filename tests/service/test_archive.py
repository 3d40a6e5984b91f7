"""GET /v1/jobs/{id}/archive over real HTTP in both modes: moto S3 (distributed) and the local store
(embedded). The tar's sha256 is in the headers before the body, equals the sidecar and the bytes that
arrive; every member equals the artifact list's file, hash for hash; other tenants get 404 and a job
without an artifact 409."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile

import pytest

from tests.service.support.client import FAST_JOB, ApiClient
from tests.service.support.stack import Stack

pytestmark = pytest.mark.integration


def test_archive_round_trip_matches_the_artifact_list(any_stack: Stack, alice: ApiClient) -> None:
    job = alice.submit_ok(FAST_JOB)
    final = alice.wait_terminal(job["id"], timeout=240)
    assert final["status"] == "succeeded", f"{final}\n{any_stack.logs()}"
    listed = {a["name"]: (a["size"], a["sha256"]) for a in alice.artifacts(job["id"])}

    digest, body = hashlib.sha256(), bytearray()
    with alice.http.stream("GET", f"/v1/jobs/{job['id']}/archive") as response:
        assert response.status_code == 200, response.read()
        announced = response.headers["X-Archive-SHA256"]  # known before the first byte
        assert response.headers["Repr-Digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(announced)).decode()}:"
        assert response.headers["content-type"] == "application/x-tar"
        assert f'spectra-{job["id"]}.tar' in response.headers["content-disposition"]
        length = int(response.headers["content-length"])
        for chunk in response.iter_bytes():
            digest.update(chunk)
            body += chunk
    assert len(body) == length
    assert digest.hexdigest() == announced == final["metrics"]["archive"]["sha256"]
    sidecar = alice.http.get(f"/v1/jobs/{job['id']}/archive.sha256")
    assert sidecar.status_code == 200 and sidecar.text == f"{announced}  spectra-{job['id']}.tar\n"

    members: dict[str, tuple[int, str]] = {}
    with tarfile.open(fileobj=io.BytesIO(bytes(body)), mode="r:") as tar:
        for info in tar.getmembers():
            assert info.isfile() and info.name.startswith(f"spectra-{job['id']}/"), info.name
            data = tar.extractfile(info).read()  # type: ignore[union-attr]
            members[info.name.split("/", 1)[1]] = (len(data), hashlib.sha256(data).hexdigest())
    assert members == listed

    # The same bytes a second time: the digest in the headers holds for every download.
    again = alice.http.get(f"/v1/jobs/{job['id']}/archive")
    assert hashlib.sha256(again.content).hexdigest() == announced

    bob = any_stack.client("bob")
    for suffix in ("/archive", "/archive.sha256"):
        foreign = bob.http.get(f"/v1/jobs/{job['id']}{suffix}")
        assert foreign.status_code == 404 and foreign.json()["detail"] == f"job {job['id']} not found"


def test_a_job_without_artifact_has_no_archive(any_stack: Stack, alice: ApiClient) -> None:
    job = alice.submit_ok({**FAST_JOB, "model": "raincandy-u/no-such-model"})
    assert alice.wait_terminal(job["id"], timeout=120)["status"] == "failed"
    for suffix in ("/archive", "/archive.sha256"):
        response = alice.http.get(f"/v1/jobs/{job['id']}{suffix}")
        assert response.status_code == 409, response.text
        assert "failed" in response.json()["detail"] and "no artifact" in response.json()["detail"]
