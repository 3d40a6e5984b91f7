"""CPU per request of the application itself, without an HTTP server or a network client.

    .venv/bin/python bench/asgi_cpu.py                    # GET /v1/jobs/{id} and GET /v1/jobs, 5 rounds
    .venv/bin/python bench/asgi_cpu.py --requests 5000 --rounds 3

bench/api_load.py measures what clients see, but on two shared cores its CPU-per-request column moves
by +-10 % from run to run (the client, PostgreSQL and the kernel compete for the same cores). A change
to the request path worth a few percent is lost in that noise. Here the ASGI application is called
directly (with uvloop, as uvicorn runs it), `concurrency` requests at a time, against the same
PostgreSQL and Redis setup as api_load.py (bench/load_stack.py), and this process's own CPU time
is divided by the requests: what the app costs per request, minus uvicorn's HTTP parsing and socket
writes. Each round is printed; take the minimum as the cost and the spread as the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.api_load import TINY_JOB  # noqa: E402  (the same seeded jobs as the load benchmark)
from bench.load_stack import migrate, redis_db, seed, service_env, throwaway_database  # noqa: E402


def _scope(path: str, query: bytes, key: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query, "headers": [(b"host", b"127.0.0.1"), (b"x-api-key", key.encode()),
                                           (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }


async def _one(app: Any, path: str, query: bytes, key: str) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(path, query, key), receive, send)
    return status


async def _round(app: Any, path: str, query: bytes, key: str, requests: int, concurrency: int) -> float:
    """CPU ms per request over `requests` requests, `concurrency` in flight."""
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await _one(app, path, query, key)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")

    start = os.times()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    end = os.times()
    return (end.user - start.user + end.system - start.system) * 1000 / requests


async def _measure(args: argparse.Namespace, key: str, job_id: str) -> list[tuple[str, list[float]]]:
    from app.main import create_app

    app = create_app()
    results = []
    async with app.router.lifespan_context(app):
        for name, path, query in (("GET /v1/jobs/{id}", f"/v1/jobs/{job_id}", b""), ("GET /v1/jobs", "/v1/jobs", b"")):
            await _round(app, path, query, key, args.requests // 5, args.concurrency)  # warm-up
            results.append((name, [await _round(app, path, query, key, args.requests, args.concurrency)
                                   for _ in range(args.rounds)]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (per-process share of 64)")
    parser.add_argument("--seed-jobs", type=int, default=200)
    args = parser.parse_args()
    import uvloop

    with ExitStack() as stack:
        database_url = stack.enter_context(throwaway_database())
        broker_url = stack.enter_context(redis_db())
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spectra-asgi-cpu-")))
        env = service_env(home, home / "hf", database_url, broker_url, 8000)
        migrate(env)
        key = seed(database_url, args.seed_jobs, TINY_JOB)
        os.environ.update(env)
        from app.core.config import get_settings

        get_settings.cache_clear()
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url)
        with engine.connect() as conn:
            job_id = conn.execute(text(
                "SELECT jobs.id FROM jobs JOIN tenants ON tenants.id = jobs.tenant_id WHERE tenants.name = 'load' "
                "ORDER BY jobs.created_at DESC LIMIT 1")).scalar_one()
        engine.dispose()
        results = uvloop.run(_measure(args, key, job_id))
    print(f"\n{args.requests} requests per round, {args.concurrency} in flight, {args.rounds} rounds; CPU ms per request")
    print("| endpoint | min | median | max |")
    print("|---|---:|---:|---:|")
    for name, per_round in results:
        print(f"| `{name}` | {min(per_round):.3f} | {statistics.median(per_round):.3f} | {max(per_round):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
