"""The fast read path (Core rows -> app.api.jobjson, orjson) answers exactly what JobOut would, and
the per-process API key cache expires (SPECTRA_AUTH_CACHE_SECONDS), the rate limiter's own Redis client
shares counts and falls back to memory."""

from __future__ import annotations

import asyncio
import json
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
        page = client.get("/v1/jobs", params={"limit": 3})
        assert page.json()["items"] == [expected[i] for i in reversed(ids[1:])]
        assert client.get("/v1/jobs", params={"cursor": page.json()["next_cursor"]}).json() == {
            "items": [expected[ids[0]]], "next_cursor": None}


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
    """The limiter's own Redis client (app.api.rediscount): shared counts, and memory when Redis is gone."""
    async def hits(limiter: RateLimiter, key: str, n: int) -> list[int | None]:
        return list(await asyncio.gather(*[limiter.hit(key, now=120.0) for _ in range(n)]))

    with redis_broker() as broker:
        key = "test-" + secrets.token_hex(4)
        first, second = RateLimiter(3, redis_url=broker), RateLimiter(3, redis_url=broker)
        assert asyncio.run(hits(first, key, 2)) == [None, None]
        assert asyncio.run(hits(second, key, 2)) == [None, 60]  # one count across processes
        down = RateLimiter(2, redis_url="redis://127.0.0.1:1/0")
        assert asyncio.run(hits(down, key, 3))[2] is not None  # counted in memory instead


def test_rate_limiter_leases_never_admit_past_the_limit() -> None:
    """Higher limits are taken from Redis in leases (1 % of the limit): across processes no more than
    the limit is admitted, and what one process leased and left unused is all another may miss."""
    async def hits(limiter: RateLimiter, key: str, n: int) -> list[int | None]:
        return [await limiter.hit(key, now=120.0) for _ in range(n)]

    with redis_broker() as broker:
        key = "lease-" + secrets.token_hex(4)
        first, second = RateLimiter(1000, redis_url=broker), RateLimiter(1000, redis_url=broker)
        assert first.lease == 10 and RateLimiter(150).lease == 1

        async def in_turn() -> tuple[list[int | None], ...]:  # one event loop: the clients' connections live in it
            return (await hits(first, key, 995),  # 100 leases: 5 requests left unused
                    await hits(second, key, 3),  # Redis counts 1000 taken: refused
                    await hits(first, key, 6))  # its own lease, then refused

        assert asyncio.run(in_turn()) == ([None] * 995, [60] * 3, [None] * 5 + [60])
        count = redis.Redis.from_url(broker).get(f"spectra:ratelimit:{key}:2")
        assert int(count or 0) == 1000 + 3 * 10 + 10  # 100 leases, then refused ones; one INCRBY each


def test_json_columns_and_bodies_keep_big_integers() -> None:
    """orjson reads integers beyond 64 bits as floats and refuses to write them: both fall back."""
    from app.api.jobjson import dumps
    from app.core.adb import _json_loads

    big = {"max_windows": 10**30, "ok": [1, 2.5, "x"]}
    assert _json_loads(json.dumps(big)) == big and _json_loads(json.dumps(big).encode()) == big
    assert isinstance(_json_loads(b'{"n": 123456789012345678901234567890}')["n"], int)
    assert json.loads(dumps(big)) == big


def test_list_pages_show_every_update_whoever_wrote_it(api: ApiServer) -> None:
    """On PostgreSQL the API keeps each job's rendered JSON by row version (app.api.jobcache): an update
    made outside the app's code (raw SQL, updated_at untouched) must still show on the next page."""
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
                                           "stage_fraction": None, "layer": None, "layers": None,
                                           "eta_seconds": None}
            assert changed == client.get(f"/v1/jobs/{ids[1]}").json()
            assert [i for i in items if i["id"] != ids[1]] == [i for i in first if i["id"] != ids[1]]
        # Whole pages are kept too (app.api.jobcache.RenderedPages): a new job, a deleted one and the
        # pages after a cursor must show as well.
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
        for _ in range(2):  # the same walk twice: the second is answered from kept pages
            seen, cursor = [], None
            while True:
                page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
                seen += [item["id"] for item in page["items"]]
                if not (cursor := page["next_cursor"]):
                    break
            assert seen == ids[:0:-1]


def test_redis_counter_matches_pipelined_replies_to_their_commands() -> None:
    """Commands of one event-loop turn leave in one write (app.api.rediscount): 200 concurrent INCRs on
    10 keys must each get their own key's count, and the counts of a key must be exactly 1..20."""
    from app.api.rediscount import RedisCounter

    async def run(counter: RedisCounter, prefix: str) -> dict[str, list[int]]:
        keys = [f"{prefix}:{i % 10}" for i in range(200)]
        counts = await asyncio.gather(*[counter.incr(key) for key in keys])
        by_key: dict[str, list[int]] = {}
        for key, count in zip(keys, counts):
            by_key.setdefault(key, []).append(count)
        await asyncio.gather(*[counter.expire(key, 60) for key in by_key])
        counter.close()
        return by_key

    with redis_broker() as broker:
        by_key = asyncio.run(run(RedisCounter(broker), "test-pipe-" + secrets.token_hex(4)))
    assert len(by_key) == 10 and all(sorted(counts) == list(range(1, 21)) for counts in by_key.values())


def test_kept_pages_match_their_rows_and_stay_within_their_memory() -> None:
    import gzip

    from app.api.jobcache import Page, RenderedPages

    pages = RenderedPages(max_bytes=100)
    rows = [("a", "7", 1), ("b", "9", 2)]
    pages.put("k", rows, Page(b"x" * 60))
    assert pages.get("k", list(rows)).body == b"x" * 60  # type: ignore[union-attr]
    assert pages.get("k", [("a", "7", 1), ("b", "10", 2)]) is None  # a job changed
    assert pages.get("k", rows[:1]) is None and pages.get("other", rows) is None
    pages.put("k", rows, Page(b"y" * 60))  # replacing a page frees its bytes: still within the bound
    assert pages.get("k", rows).body == b"y" * 60  # type: ignore[union-attr]
    pages.put("k2", rows, Page(b"z" * 60))  # over the bound: the old pages go
    assert pages.get("k", rows) is None and pages.get("k2", rows).body == b"z" * 60  # type: ignore[union-attr]
    big = Page(b'{"items":[' + b'{"id":"0123"},' * 200 + b"]}")
    assert big.gzipped() is big.gzipped() and gzip.decompress(big.gzipped() or b"") == big.body  # made once
    assert Page(b"x" * 1023).gzipped() is None


def test_libpq_reads_round_trip_parameters_and_types_and_survive_a_failed_query() -> None:
    """app.core.pgreads talks to libpq itself: text parameters (arrays quoted), typed columns, and a
    statement error that leaves the next read working."""
    import psycopg
    from sqlalchemy import ARRAY, DateTime, Integer, String, bindparam, func, literal_column, select

    from app.core.adb import _json_loads
    from app.core.pgreads import PgReads
    from tests.service.support.infra import fresh_postgres_database

    scalars = select(
        bindparam("n", type_=Integer).label("n"), bindparam("s", type_=String).label("s"),
        bindparam("t", type_=DateTime(timezone=True)).label("t"), literal_column("true").label("flag"),
        bindparam("none", type_=String).label("none"), literal_column("'{\"a\": [1, 2]}'::json").label("j"))
    tags = select(func.unnest(bindparam("tags", type_=ARRAY(String))).label("tag"))
    failing = select(literal_column("1 / 0").label("x"))
    when = datetime(2026, 11, 23, 19, 0, 0, 123456, tzinfo=UTC)
    odd = ["plain", 'quo"te', "back\\slash", "com,ma", "{brace}", "", "é"]

    async def reads(url: str) -> None:
        reads = PgReads(url, 2, _json_loads)
        try:
            row, = await reads.read(scalars, {"n": 7, "s": "it's", "t": when, "none": None})
            assert row == (7, "it's", when, True, None, {"a": [1, 2]}) and row.t.tzinfo is not None
            assert [r.tag for r in await reads.read(tags, {"tags": odd})] == odd
            try:
                await reads.read(failing)
            except psycopg.errors.DivisionByZero:
                pass
            else:
                raise AssertionError("a failing statement must raise its own error")
            assert [r.tag for r in await reads.read(tags, {"tags": ["again"]})] == ["again"]
            try:
                await reads.read(tags, {})
            except psycopg.ProgrammingError as exc:  # as psycopg itself refuses it, never a NULL
                assert "tags" in str(exc)
            else:
                raise AssertionError("a missing parameter must be refused")
        finally:
            await reads.close()

    with fresh_postgres_database() as url:
        asyncio.run(reads(url))
