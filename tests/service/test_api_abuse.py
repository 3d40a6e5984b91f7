"""Hostile clients on a real uvicorn: slow bodies hold no in-flight slot and are cut off at the
deadline; a forged list cursor is a 422; an oversized job spec is refused."""

from __future__ import annotations

import base64
import json
import socket
import time

from tests.service.api_env import BODY_TIMEOUT, ApiServer, api, job_body  # noqa: F401  (fixture)

SLOW_CLIENTS = 32  # twice the in-flight slots of an API process (app.core.adb.API_POOL_SIZE)


def _slow_body(base_url: str, key: str) -> socket.socket:
    """Headers of a POST announcing 1000 bytes, then one byte of body, then nothing."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n{".encode())
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """The whole answer: headers and body may arrive in separate segments; the server then closes."""
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_bodies_do_not_delay_another_tenants_read(api: ApiServer) -> None:
    attacker, victim = api.new_key("slowloris"), api.new_key("bystander")
    with api.client(victim) as client:
        job_id = client.post("/v1/jobs", json=job_body()).json()["id"]
        client.get(f"/v1/jobs/{job_id}")  # connection and key lookup warm
        slow = [_slow_body(api.base_url, attacker) for _ in range(SLOW_CLIENTS)]
        try:
            time.sleep(0.5)  # every slow request is in the server, waiting for its body
            waits = []
            for _ in range(3):
                started = time.perf_counter()
                response = client.get(f"/v1/jobs/{job_id}")
                waits.append(time.perf_counter() - started)
                assert response.status_code == 200
            # Before: each slow request held a slot, so this waited until they hung up.
            assert min(waits) < 0.1, waits
            answer = _read_until_closed(slow[0])  # cut off at the deadline, with a reason
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"SPECTRA_BODY_TIMEOUT_SECONDS" in answer
        finally:
            for sock in slow:
                sock.close()
    assert BODY_TIMEOUT < 30  # the recv above waited for it


def _cursor(raw: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()


def test_forged_cursors_are_422(api: ApiServer) -> None:
    key = api.new_key("cursors")
    with api.client(key) as client:
        forged = [
            _cursor({"t": "2026-01-01T00:00:00+23:59", "id": "a" * 32}),  # an offset we never write
            _cursor({"t": "0001-01-01T00:00:00-23:59:59.999999", "id": "a" * 32}),
            _cursor({"t": "9999-12-31T23:59:59+00:00", "id": "a\u0000b"}),
            _cursor({"t": "2026-01-01T00:00:00", "id": "a" * 32}),  # no offset
            _cursor(["not", "an", "object"]),
            _cursor({"t": 5, "id": "a"}),
            "%%%", "bm90IGpzb24",
        ]
        for cursor in forged:
            response = client.get("/v1/jobs", params={"cursor": cursor})
            assert response.status_code == 422, (cursor, response.text)
            assert "cursor" in response.text
        fine = _cursor({"t": "2026-01-01T00:00:00+00:00", "id": "a" * 32})
        assert client.get("/v1/jobs", params={"cursor": fine}).status_code == 200


def test_job_spec_lists_and_size_are_bounded(api: ApiServer) -> None:
    key = api.new_key("bigspec")
    with api.client(key) as client:
        too_many_layers = job_body(method="grasp", options={"layers": list(range(2000))})
        response = client.post("/v1/jobs", json=too_many_layers)
        assert response.status_code == 422 and "layers" in response.text, response.text
        repeated = job_body(options={"targets": ["q_proj"] * 8})
        response = client.post("/v1/jobs", json=repeated)
        assert response.status_code == 422 and "targets" in response.text, response.text
