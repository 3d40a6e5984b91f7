"""Load benchmark of the HTTP API: requests/s and p50/p99 latency per endpoint and concurrency.

    .venv/bin/python bench/api_load.py                       # starts its own API on PostgreSQL + Redis
    .venv/bin/python bench/api_load.py --base-url URL --api-key KEY   # against a running service

With no --base-url it creates a throwaway PostgreSQL database and a Redis broker db, starts uvicorn
(--workers N), seeds one tenant with --seed-jobs jobs, runs each scenario for --seconds, prints a
markdown table, writes bench/results/api_load.json, and drops everything it created. Nothing
consumes the queue: POST measures the API's own work (validate, insert, commit, enqueue).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

JOB = {"model": "raincandy-u/TinyStories-656K", "method": "svd", "target_ratio": 0.2,
       "calibration": {"source": "tinystories", "samples": 4, "seq_len": 64},
       "evaluation": {"corpus": "tinystories", "seq_len": 128, "max_windows": 2}}


async def _scenario(base_url: str, key: str, method: str, path: str, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}, limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    response = await client.request(method, path, json=JOB if method == "POST" else None)
                    ok = response.status_code < 400
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"endpoint": f"{method} {path.split('?')[0].replace(path.split('/')[-1], '{id}') if path.count('/') == 3 else path}",
            "concurrency": concurrency, "requests": len(latencies), "rps": len(latencies) / elapsed,
            "p50_ms": pick(0.50), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(latencies) * 1000,
            "errors": errors}


def _start_own_service(stack: ExitStack, workers: int, seed_jobs: int) -> tuple[str, str]:
    import random

    import redis

    from app import crud
    from app.core.db import session_scope
    from app.core.migrations import upgrade_head
    from tests.service.api_env import REDIS_URL, server_env, throwaway_postgres
    from tests.service.support.processes import Process, free_port, wait_until

    database_url = stack.enter_context(throwaway_postgres())
    upgrade_head(database_url)
    broker = f"{REDIS_URL}/{random.randint(1, 15)}"
    stack.callback(lambda: redis.Redis.from_url(broker).delete("gpu"))
    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spectra-load-")))
    with session_scope(database_url) as session:
        tenant = crud.get_or_create_tenant(session, name="load")
        _, key = crud.create_api_key(session, tenant_name="load")
        for _ in range(seed_jobs):
            crud.create_job(session, tenant_id=tenant.id, spec={**JOB, "revision": None})
    port = free_port()
    env = server_env(home, database_url, broker, port)
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    process = Process("api-load", command, env, home / "logs")
    stack.callback(process.stop)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 60, "the API", process=process)
    return base, key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url")
    parser.add_argument("--api-key", default=os.environ.get("SPECTRA_API_KEY"))
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (own service only)")
    parser.add_argument("--seed-jobs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api_load.json")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.base_url:
            if not args.api_key:
                parser.error("--api-key (or SPECTRA_API_KEY) is required with --base-url")
            base, key = args.base_url.rstrip("/"), args.api_key
        else:
            base, key = _start_own_service(stack, args.workers, args.seed_jobs)
        job_id = httpx.post(f"{base}/v1/jobs", json=JOB, headers={"X-API-Key": key}, timeout=30).json()["id"]
        rows = []
        for concurrency in args.concurrency:
            for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", "/v1/jobs?limit=20"), ("POST", "/v1/jobs")):
                row = asyncio.run(_scenario(base, key, method, path, concurrency, args.seconds))
                rows.append(row)
                print(f"{row['endpoint']:<22} c={concurrency:<3} {row['rps']:8.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
                      f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}", flush=True)
    print("\n| endpoint | conc. | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['endpoint']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                "load_avg": os.getloadavg()},
                                    "workers": args.workers, "seconds": args.seconds, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
