"""A small HTTP client for the service tests: one tenant's key, JSON helpers and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}

# The small fast job every test uses (DESIGN: svd, ratio 0.2, 4 x 64 calibration, 2 windows of 128).
FAST_JOB: dict[str, Any] = {
    "model": "raincandy-u/TinyStories-656K",
    "method": "svd",
    "target_ratio": 0.2,
    "calibration": {"source": "tinystories", "samples": 4, "seq_len": 64},
    "evaluation": {"corpus": "tinystories", "seq_len": 128, "max_windows": 2},
}


class ApiClient:
    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.http = httpx.Client(base_url=self.base_url, headers={"X-API-Key": key}, timeout=30)

    def close(self) -> None:
        self.http.close()

    def submit(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.http.post("/v1/jobs", json=body, headers=headers)

    def submit_ok(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.submit(body)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float,
             what: str = "the job") -> dict[str, Any]:
        """Poll GET /v1/jobs/{id} until `until(job)`; fails with the last body on timeout."""
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while not until(job):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached in {timeout:.0f} s; last state: {job}")
            time.sleep(0.25)
            job = self.job(job_id)
        return job

    def wait_terminal(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        return self.wait(job_id, lambda j: j["status"] in TERMINAL, timeout, "a terminal state")

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/jobs/{job_id}/artifacts")
        assert response.status_code == 200, response.text
        return list(response.json())

    def events(self, job_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/jobs/{job_id}/events")
        assert response.status_code == 200, response.text
        body = response.json()
        return list(body["events"] if isinstance(body, dict) else body)


def read_stream(response: httpx.Response, stop_after: int | None = None) -> list[dict[str, str]]:
    """The Server-Sent Events of a streamed response (each as its fields: event, id, data), until the
    server ends the stream or `stop_after` events have arrived (then the caller hangs up)."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                events.append(fields)
                if stop_after is not None and len(events) >= stop_after:
                    break
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ") if name != "data" else (
                fields["data"] + "\n" + value.removeprefix(" ") if "data" in fields else value.removeprefix(" "))
    return events
