"""app.api.fastreads: the hot GETs are answered without FastAPI's routing, with the same bytes as
the FastAPI routes; every request it cannot answer exactly like them is passed on untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app import crud
from app.core.config import Settings
from app.core.db import session_scope
from app.main import SpectraAPI, create_app
from tests.service.api_env import job_body


class PassedOn(Exception):
    """The fast path did not answer: the request would go on to FastAPI's middleware and routes."""


def _fast_path_only(app: SpectraAPI) -> Any:
    """An ASGI callable that is only the app's fast path: it raises PassedOn where the app would go on."""
    assert app.fast_reads is not None

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not await app.fast_reads.answer(scope, receive, send):  # type: ignore[union-attr]
            raise PassedOn(scope["path"])

    return asgi


async def _call(asgi: Any, path: str, query: str = "", key: str | None = None,
                extra: list[tuple[bytes, bytes]] | None = None,
                sent: list[dict[str, Any]] | None = None) -> tuple[int, bytes]:
    """One GET through an ASGI callable: (status, body)."""
    headers = [(b"host", b"testserver")] + ([(b"x-api-key", key.encode())] if key is not None else []) + (extra or [])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    sent = [] if sent is None else sent

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_hot_reads_answer_like_the_fastapi_routes_without_them(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, signing_secret="s", auth_cache_seconds=0)  # type: ignore[arg-type]
    app = create_app(settings)
    routes_only = create_app(settings)  # the same app without the fast path: FastAPI's routes answer
    routes_only.fast_reads = None
    with TestClient(app) as client, TestClient(routes_only) as plain:
        with session_scope(settings.database_url or "") as session:
            _, key = crud.create_api_key(session, tenant_name="fast")
            _, other_key = crud.create_api_key(session, tenant_name="other")
        ids = [client.post("/v1/jobs", json=job_body(target_ratio=r), headers={"X-API-Key": key}).json()["id"]
               for r in (0.2, 0.3, 0.4)]
        cursor = client.get("/v1/jobs", params={"limit": 1}, headers={"X-API-Key": key}).json()["next_cursor"]
        fast = _fast_path_only(app)

        answered = [(f"/v1/jobs/{ids[0]}", ""), ("/v1/jobs", ""), ("/v1/jobs", "limit=2"),
                    ("/v1/jobs", f"limit=1&cursor={cursor}"), ("/v1/jobs", "status=queued&method=svd"),
                    ("/v1/jobs", "status=running")]
        for path, query in answered:
            by_route = plain.portal.call(_call, routes_only, path, query, key)
            by_fast = client.portal.call(_call, fast, path, query, key)
            assert by_fast == by_route and by_fast[0] == 200, (path, query)

        # Errors come from the app's own handlers, with the routes' messages.
        errors = {(f"/v1/jobs/{ids[0]}", None): (401, "missing API key"),
                  (f"/v1/jobs/{ids[0]}", "sk_" + "x" * 43): (401, "invalid or revoked API key"),
                  (f"/v1/jobs/{ids[0]}", other_key): (404, f"job {ids[0]} not found"),
                  ("/v1/jobs/0123456789abcdef", key): (404, "job 0123456789abcdef not found")}
        for (path, with_key), (status, detail) in errors.items():
            got = client.portal.call(_call, fast, path, "", with_key)
            assert got[0] == status and detail in got[1].decode(), (path, got)

        # Passed on before any side effect: FastAPI validates (422) or routes it.
        passed_on = [("/v1/jobs", "limit=0"), ("/v1/jobs", "limit=201"), ("/v1/jobs", "limit=05"),
                     ("/v1/jobs", "limit=abc"), ("/v1/jobs", "status=bogus"), ("/v1/jobs", "method=SVD"),
                     ("/v1/jobs", "limit=1&limit=2"), ("/v1/jobs", "cursor=garbage"), ("/v1/jobs", "limit=2&x=1"),
                     ("/v1/jobs/not%20an%20id", ""), ("/v1/jobs/" + "a" * 65, ""), (f"/v1/jobs/{ids[0]}/events", "")]
        # So is a GET that a middleware layer acts on: one with a body (413 above the limit), or with
        # a browser's Origin (CORS headers).
        headed = [[(b"content-length", b"10")], [(b"transfer-encoding", b"chunked")],
                  [(b"origin", b"https://app.example")]]
        for path, query, extra in [(p, q, None) for p, q in passed_on] + [("/v1/jobs", "", h) for h in headed]:
            try:
                client.portal.call(_call, fast, path, query, key, extra)
            except PassedOn:
                continue
            raise AssertionError(f"{path}?{query} {extra} was answered, not passed on")
        for query in ("limit=0", "limit=abc", "status=bogus", "cursor=garbage"):
            response = client.get(f"/v1/jobs?{query}", headers={"X-API-Key": key})
            assert response.status_code == 422 and response.json()["detail"][0]["loc"][0] == "query", query


def test_metrics_label_fast_reads_with_the_route_template(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, signing_secret="s")  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        with session_scope(settings.database_url or "") as session:
            _, key = crud.create_api_key(session, tenant_name="metered")
        job_id = client.post("/v1/jobs", json=job_body(), headers={"X-API-Key": key}).json()["id"]
        assert client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key}).status_code == 200
        assert client.get("/v1/jobs/0123456789abcdef", headers={"X-API-Key": key}).status_code == 404
        metrics = client.get("/metrics").text
        assert 'spectra_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"} 1.0' in metrics
        assert 'spectra_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0' in metrics
        assert job_id not in metrics  # a template, never the raw path


def test_pages_go_gzipped_to_clients_that_accept_it(tmp_path: Path) -> None:
    import gzip

    from app.api.fastreads import accepts_gzip

    settings = Settings(home=tmp_path, signing_secret="s")  # type: ignore[arg-type]
    app = create_app(settings)
    with TestClient(app) as client:
        with session_scope(settings.database_url or "") as session:
            _, key = crud.create_api_key(session, tenant_name="gzip")
        fast = _fast_path_only(app)
        tiny = client.portal.call(_call, fast, "/v1/jobs", "", key, [(b"accept-encoding", b"gzip")])
        assert tiny == (200, b'{"items":[],"next_cursor":null}')  # too small to gain: as it is
        for ratio in (0.2, 0.3, 0.4):
            client.post("/v1/jobs", json=job_body(target_ratio=ratio), headers={"X-API-Key": key})
        plain = client.portal.call(_call, fast, "/v1/jobs", "", key)
        for value in (b"gzip", b"br, gzip;q=0.5", b"*"):
            sent: list[dict[str, Any]] = []
            status, body = client.portal.call(_call, fast, "/v1/jobs", "", key, [(b"accept-encoding", value)], sent)
            headers = dict(sent[0]["headers"])
            assert status == 200 and headers[b"content-encoding"] == b"gzip" and headers[b"vary"] == b"Accept-Encoding"
            assert gzip.decompress(body) == plain[1] and len(body) < len(plain[1]) / 3
        for value in (b"identity", b"gzip;q=0", b"gzip;q=0, *"):
            assert client.portal.call(_call, fast, "/v1/jobs", "", key, [(b"accept-encoding", value)]) == plain
        assert accepts_gzip(b"GZIP") and not accepts_gzip(b"deflate") and not accepts_gzip(b"*;q=0")
        # What HTTP clients send by default (httpx here) gets the same JSON, decoded by the client.
        response = client.get("/v1/jobs", headers={"X-API-Key": key})
        assert response.headers["content-encoding"] == "gzip" and response.content == plain[1]


def test_fast_reads_wait_for_an_in_flight_slot_like_every_request(tmp_path: Path) -> None:
    """The fast path runs before InflightLimit, so it takes the same slots itself: with every slot
    taken, a fast read waits, and it goes on when one is freed."""
    import asyncio

    settings = Settings(home=tmp_path, signing_secret="s")  # type: ignore[arg-type]
    app = create_app(settings)
    with TestClient(app) as client:
        with session_scope(settings.database_url or "") as session:
            _, key = crud.create_api_key(session, tenant_name="slots")
        assert app.fast_reads is not None
        slots = app.fast_reads.slots

        async def read_while_full() -> tuple[bool, int]:
            for _ in range(slots.limit):
                await slots.semaphore.acquire()
            read = asyncio.ensure_future(_call(_fast_path_only(app), "/v1/jobs", "", key))
            await asyncio.sleep(0.3)
            waited = not read.done()
            slots.semaphore.release()
            status, _ = await asyncio.wait_for(read, 10)
            for _ in range(slots.limit - 1):
                slots.semaphore.release()
            return waited, status

        assert client.portal.call(read_while_full) == (True, 200)


def test_startup_objects_are_out_of_the_collectors_reach_while_serving(tmp_path: Path) -> None:
    """Full collections walked every object alive since startup (~100 ms pauses under load): the app
    freezes them while it serves, and gives the process its collector back when it stops."""
    import gc

    before = gc.get_threshold()
    with TestClient(create_app(Settings(home=tmp_path, signing_secret="s"))):  # type: ignore[arg-type]
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == 20_000
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before

