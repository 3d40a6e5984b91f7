"""The GET routes answer JobOut (list items slim unless asked for more), the per-process API key
cache expires (SPECTRA_AUTH_CACHE_SECONDS), and the rate limiter shares its counts through Redis and
falls back to memory."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
from fastapi.testclient import TestClient

from app import crud
from app.api.ratelimit import RateLimiter
from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app
from app.models import ApiKey, Job
from app.schemas import JobOut
from app.security import hash_api_key
from tests.service.api_env import ApiServer, api, job_body, redis_broker  # noqa: F401  (fixture)


def test_reads_answer_what_jobout_would(api: ApiServer) -> None:
    """Every field shape: running with progress, succeeded with metrics, failed with an error, queued."""
    key = api.new_key("fastpath")
    with api.client(key) as client:
        ids = [client.post("/v1/jobs", json=job_body(target_ratio=ratio)).json()["id"] for ratio in (0.2, 0.25, 0.5, 0.3)]
        with session_scope(api.database_url) as session:
            for job_id in ids[:3]:
                crud.claim_job(session, job_id=job_id, worker="w", stale_after=60)
            crud.set_progress(session, job_id=ids[0], stage="compress", fraction=1.0, message="layer 3/3 ✓")
            crud.finish_job(session, job_id=ids[1], status="succeeded", worker="w",
                            metrics={"ppl_before": 12.5, "ppl_after": 13.0, "params": 656000, "nested": {"a": [1, 2.5]}})
            crud.finish_job(session, job_id=ids[2], status="failed", worker="w", error_code="invalid_input",
                            error_message="no such \"model\"")
            # A whole second (no fraction in the JSON) and an empty error code (no error object).
            job = session.get(Job, ids[3])
            job.started_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
            job.error_code = ""
        with session_scope(api.database_url) as session:
            expected = {i: JobOut.from_row(crud.get_job(session, job_id=i)).model_dump(mode="json") for i in ids}  # type: ignore[arg-type]
        for job_id in ids:
            response = client.get(f"/v1/jobs/{job_id}")
            assert response.headers["content-type"] == "application/json"
            assert response.json() == expected[job_id]
        assert expected[ids[3]]["started_at"] == "2026-01-02T03:04:05Z" and expected[ids[3]]["error"] is None
        page = client.get("/v1/jobs", params={"limit": 3, "include": "spec,metrics,estimate"})
        assert page.json()["items"] == [expected[i] for i in reversed(ids[1:])]
        assert client.get("/v1/jobs", params={"cursor": page.json()["next_cursor"],
                                              "include": "spec,metrics,estimate"}).json() == {
            "items": [expected[ids[0]]], "next_cursor": None}
        slim = client.get("/v1/jobs", params={"limit": 3}).json()["items"]
        assert slim == [{k: v for k, v in expected[i].items() if k not in ("spec", "metrics", "estimate")}
                        for i in reversed(ids[1:])]
        only_metrics = client.get("/v1/jobs", params={"limit": 1, "include": "metrics"}).json()["items"][0]
        assert "spec" not in only_metrics and only_metrics["metrics"] == expected[ids[3]]["metrics"]
        assert client.get("/v1/jobs", params={"include": "everything"}).status_code == 422


def test_revoked_key_works_at_most_the_cache_ttl(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, signing_secret="s", auth_cache_seconds=2)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        with session_scope(settings.database_url or "") as session:
            _, key = crud.create_api_key(session, tenant_name="cached")
        headers = {"X-API-Key": key}
        assert client.get("/v1/jobs", headers=headers).status_code == 200
        with session_scope(settings.database_url or "") as session:
            row = session.query(ApiKey).filter_by(key_hash=hash_api_key(key)).one()
            row.revoked_at = datetime.now(UTC)
        revoked_at = time.monotonic()
        assert client.get("/v1/jobs", headers=headers).status_code == 200  # still cached: the trade-off
        time.sleep(max(0.0, revoked_at + 2.1 - time.monotonic()))
        assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_rate_limiter_counts_in_redis_and_falls_back_to_memory() -> None:
    """Shared counts through Redis (redis-py asyncio), and memory when Redis is gone."""
    async def hits(limiter: RateLimiter, key: str, n: int) -> list[int | None]:
        return list(await asyncio.gather(*[limiter.hit(key, now=120.0) for _ in range(n)]))

    with redis_broker() as broker:
        key = "test-" + secrets.token_hex(4)
        first, second = RateLimiter(3, redis_url=broker), RateLimiter(3, redis_url=broker)
        assert asyncio.run(hits(first, key, 2)) == [None, None]
        # One count across processes: of two concurrent requests, one is the third (admitted), one the fourth.
        assert sorted(r or 0 for r in asyncio.run(hits(second, key, 2))) == [0, 60]
        down = RateLimiter(2, redis_url="redis://127.0.0.1:1/0")
        assert asyncio.run(hits(down, key, 3))[2] is not None  # counted in memory instead


def test_two_limiters_share_one_exact_count() -> None:
    """Two API processes at 1000/min: together they admit exactly 1000 in a window, then refuse."""
    async def hits(limiter: RateLimiter, key: str, n: int) -> list[int | None]:
        return [await limiter.hit(key, now=120.0) for _ in range(n)]

    with redis_broker() as broker:
        key = "shared-" + secrets.token_hex(4)
        first, second = RateLimiter(1000, redis_url=broker), RateLimiter(1000, redis_url=broker)

        async def in_turn() -> tuple[list[int | None], ...]:  # one event loop: the clients' connections live in it
            try:
                return await hits(first, key, 600), await hits(second, key, 400), await hits(first, key, 2)
            finally:
                await first.close()
                await second.close()

        assert asyncio.run(in_turn()) == ([None] * 600, [None] * 400, [60] * 2)
        client = redis.Redis.from_url(broker)
        assert int(client.get(f"spectra:ratelimit:{key}:2") or 0) == 1002
        assert 0 < client.ttl(f"spectra:ratelimit:{key}:2") <= 120  # the window's key expires by itself


def test_json_columns_keep_big_integers(api: ApiServer) -> None:
    """A spec may hold an integer beyond 64 bits: it reads back exactly, in the job and in the list."""
    key = api.new_key("bigint")
    with api.client(key) as client:
        body = job_body()
        body["seed"] = 7
        job = client.post("/v1/jobs", json=body).json()
        with session_scope(api.database_url) as session:
            crud.claim_job(session, job_id=job["id"], worker="w", stale_after=60)
            crud.finish_job(session, job_id=job["id"], status="succeeded", worker="w", metrics={"n": 10**30})
        assert client.get(f"/v1/jobs/{job['id']}").json()["metrics"] == {"n": 10**30}
        assert client.get("/v1/jobs", params={"include": "metrics"}).json()["items"][0]["metrics"] == {"n": 10**30}


def test_list_pages_show_every_update_whoever_wrote_it(api: ApiServer) -> None:
    """An update made outside the app's code (raw SQL, updated_at untouched) shows on the next page."""
    from sqlalchemy import text

    key = api.new_key("pages")
    with api.client(key) as client:
        ids = [client.post("/v1/jobs", json=job_body(target_ratio=r)).json()["id"] for r in (0.2, 0.3, 0.4)]
        first = client.get("/v1/jobs").json()["items"]
        assert [item["id"] for item in first] == ids[::-1]
        for round_ in range(3):  # the same job changed again and again: each version shows
            with session_scope(api.database_url) as session:
                session.execute(text("UPDATE jobs SET progress_message = :m, progress_fraction = :f WHERE id = :id"),
                                {"m": f"step {round_}", "f": round_ / 4, "id": ids[1]})
            items = client.get("/v1/jobs").json()["items"]
            changed = next(item for item in items if item["id"] == ids[1])
            assert changed["progress"] == {"stage": None, "fraction": round_ / 4, "message": f"step {round_}",
                                           "overall_fraction": None, "layer": None, "layers": None,
                                           "eta_seconds": None}
            full = client.get(f"/v1/jobs/{ids[1]}").json()
            assert changed == {k: v for k, v in full.items() if k not in ("spec", "metrics", "estimate")}
            assert [i for i in items if i["id"] != ids[1]] == [i for i in first if i["id"] != ids[1]]
        # A new job, a deleted one and the pages after a cursor show as well.
        unchanged = client.get("/v1/jobs").content
        assert client.get("/v1/jobs").content == unchanged
        ids.append(client.post("/v1/jobs", json=job_body(target_ratio=0.5)).json()["id"])
        assert [item["id"] for item in client.get("/v1/jobs").json()["items"]] == ids[::-1]
        with session_scope(api.database_url) as session:
            for table in ("job_events", "artifacts"):
                session.execute(text(f"DELETE FROM {table} WHERE job_id = :id"), {"id": ids[0]})
            session.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": ids[0]})
        assert [item["id"] for item in client.get("/v1/jobs").json()["items"]] == ids[:0:-1]
        seen, cursor = [], None
        for _ in range(2):  # the same walk twice
            seen, cursor = [], None
            while True:
                page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
                seen += [item["id"] for item in page["items"]]
                if not (cursor := page["next_cursor"]):
                    break
            assert seen == ids[:0:-1]


def test_startup_objects_are_out_of_the_collectors_reach_while_serving(tmp_path: Path) -> None:
    """Full collections walked every object alive since startup (~100 ms pauses under load): the app
    freezes them while it serves, and gives the process its collector back when it stops."""
    import gc

    before = gc.get_threshold()
    with TestClient(create_app(Settings(home=tmp_path, signing_secret="s"))):  # type: ignore[arg-type]
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == 20_000
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_etag_revalidation_answers_304_until_the_job_changes(api: ApiServer) -> None:
    key = api.new_key("etag")
    with api.client(key) as client:
        job_id = client.post("/v1/jobs", json=job_body()).json()["id"]
        first = client.get(f"/v1/jobs/{job_id}")
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "no-cache" and first.headers["retry-after"] == "5"
        assert first.headers["link"] == f'</v1/jobs/{job_id}/events>; rel="monitor"'
        unchanged = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
        assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
        page = client.get("/v1/jobs")
        assert client.get("/v1/jobs", headers={"If-None-Match": page.headers["etag"]}).status_code == 304
        with session_scope(api.database_url) as session:
            crud.claim_job(session, job_id=job_id, worker="w", stale_after=60)
            crud.set_progress(session, job_id=job_id, stage="compress", fraction=0.5, message="layer 1")
        changed = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert changed.json()["progress"]["message"] == "layer 1"
        assert client.get("/v1/jobs", headers={"If-None-Match": page.headers["etag"]}).status_code == 200
        with session_scope(api.database_url) as session:
            crud.finish_job(session, job_id=job_id, status="succeeded", worker="w", metrics={"ppl_after": 9.0})
        done = client.get(f"/v1/jobs/{job_id}")
        assert "retry-after" not in done.headers and "link" not in done.headers


def test_docs_render_from_assets_served_here(tmp_path: Path) -> None:
    """/docs and /redoc reference only Spectra's own URLs (they worked only online before), and the
    POST /v1/jobs body has examples."""
    import re

    with TestClient(create_app(Settings(home=tmp_path, signing_secret="s"))) as client:  # type: ignore[arg-type]
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            assert not re.search(r"(src|href)=['\"]https?://", html), html
            for asset in re.findall(r"(?:src|href)=['\"](/docs-assets/[^'\"]+)", html):
                served = client.get(asset)
                assert served.status_code == 200 and len(served.content) > 1000, asset
        examples = client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["requestBody"]["content"][
            "application/json"]["examples"]
        assert examples["svd"]["value"]["method"] == "svd"
