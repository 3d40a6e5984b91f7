"""PostgreSQL going away under a running API (real uvicorn): 503 with a message, never 500, /readyz
names the database, and the API recovers by itself once the database is back."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from app import crud
from app.core.db import session_scope
from app.core.migrations import upgrade_head
from tests.service.api_env import OPERATOR, job_body, redis_broker, server_env, throwaway_postgres
from tests.service.support.processes import free_port, start_api, wait_until
from tests.service.tcp_proxy import TcpProxy


def test_database_outage_gives_503_then_recovers(tmp_path: Path) -> None:
    with throwaway_postgres() as direct_url, redis_broker() as broker:
        upgrade_head(direct_url)
        with session_scope(direct_url) as session:
            _, key = crud.create_api_key(session, tenant_name="outage")
        parsed = make_url(direct_url)
        proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432)).start()
        via_proxy = parsed.set(port=proxy.port).render_as_string(hide_password=False)
        port = free_port()
        api = start_api(server_env(tmp_path, via_proxy, broker), port, tmp_path / "logs")
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=30)
            job = client.post("/v1/jobs", json=job_body())
            assert job.status_code == 202, job.text

            proxy.stop()
            for method, path in [("GET", f"/v1/jobs/{job.json()['id']}"), ("GET", "/v1/jobs"), ("POST", "/v1/jobs")]:
                response = client.request(method, path, json=job_body() if method == "POST" else None)
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert "database is unavailable" in response.json()["detail"]
            ready = client.get("/readyz", headers=OPERATOR)
            assert ready.status_code == 503 and not ready.json()["checks"]["database"]["ok"]
            assert ready.json()["checks"]["broker"]["ok"] and ready.json()["checks"]["store"]["ok"]

            proxy.start()  # same port: the pool's pre-ping replaces the dead connections
            wait_until(lambda: client.get("/readyz", headers=OPERATOR).status_code == 200, 30, "readiness after the outage")
            again = client.get(f"/v1/jobs/{job.json()['id']}")
            assert again.status_code == 200 and again.json()["status"] == "queued"
            assert "Exception in ASGI application" not in api.log_text()  # nothing went unhandled
        finally:
            api.stop()
            proxy.stop()
