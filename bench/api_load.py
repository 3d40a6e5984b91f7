"""Load benchmark of the Spectra API (issue #6): req/s and p50/p99 latency of GET /v1/jobs/{id},
GET /v1/jobs and POST /v1/jobs at 16 and 64 concurrent connections, then the queue's submit-to-start
latency with a real Celery worker.

    .venv/bin/python bench/api_load.py                  # defaults: 2 uvicorn workers, 10 s per scenario
    .venv/bin/python bench/api_load.py --seconds 3 --queue-jobs 2        # a quick run
    .venv/bin/python bench/api_load.py --profile-dir /tmp/prof           # + py-spy during reads at 64

It creates everything it uses and removes it at exit: a fresh PostgreSQL database (127.0.0.1:5432,
migrated with `spectra migrate`), an empty Redis db (127.0.0.1:6379, the highest empty of 1-15, only
its Celery keys removed afterwards), uvicorn
(`--workers N`, uvloop + httptools, no access log) with the production defaults except
SPECTRA_RATE_LIMIT_PER_MINUTE=100000000, so the per-key limiter runs but never answers 429.
The database holds --seed-jobs finished jobs for the benchmarked tenant (and as many for a neighbour).

During the HTTP phases nothing consumes the queue (a worker would compete for the 2 cores), so
POST measures the API's own work: validate, insert job + event, commit, send to Redis. Afterwards
the queued rows are cancelled, the queue emptied, one Celery worker (prefork, -c 1) started,
and --queue-jobs tiny svd jobs (TinyStories-656K from an offline HF cache) are submitted one after
another, each once the previous finished: submit-to-start = the job's started_at (set by the
worker's claim) minus the moment the POST was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.cpu_account import CpuAccount, Snapshot  # noqa: E402
from bench.load_client import Result, build_request, run_httpx, run_raw  # noqa: E402
from bench.load_stack import (  # noqa: E402
    BENCH_RATE_LIMIT_PER_MINUTE, Service, drain_queue, running_service, start_celery_worker,
)

# The e2e tests' small job: valid for the API, and the worker finishes it in seconds.
TINY_JOB: dict[str, object] = {
    "model": "raincandy-u/TinyStories-656K", "method": "svd", "target_ratio": 0.2,
    "calibration": {"source": "tinystories", "samples": 4, "seq_len": 64},
    "evaluation": {"corpus": "tinystories", "seq_len": 128, "max_windows": 2},
}
TARGET_P99_MS = 50.0
TERMINAL = {"succeeded", "failed", "cancelled"}


def scenarios(job_id: str, list_limit: int | None) -> list[tuple[str, str, str, dict[str, object] | None]]:
    listing = "/v1/jobs" if list_limit is None else f"/v1/jobs?limit={list_limit}"
    return [("GET /v1/jobs/{id}", "GET", f"/v1/jobs/{job_id}", None),
            ("GET /v1/jobs", "GET", listing, None),
            ("POST /v1/jobs", "POST", "/v1/jobs", TINY_JOB)]


def measure(service: Service, account: CpuAccount, method: str, path: str, body: dict[str, object] | None,
            concurrency: int, args: argparse.Namespace, profile_label: str | None = None,
            ) -> tuple[Result, dict[str, float]]:
    marks: list[Snapshot] = []
    profilers: list[subprocess.Popen[bytes]] = []

    def on_start() -> None:  # the measured window opens: warm-up is over
        marks.append(account.snapshot())
        if profile_label:
            profilers.extend(start_profilers(service, args.profile_dir, profile_label, args.seconds))

    if args.client == "httpx":
        coro = run_httpx(service.base_url, method, path, service.api_key, body, concurrency, args.seconds,
                         args.warmup, args.max_requests, on_start)
    else:
        request = build_request(service.base_url, method, path, service.api_key, body, args.accept_encoding)
        coro = run_raw(service.base_url, request, concurrency, args.seconds, args.warmup, args.max_requests,
                       on_start, args.rate)
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    cpu = account.difference(marks[0], account.snapshot(), len(result.latencies))
    for profiler in profilers:
        profiler.wait(timeout=60)
    return result, cpu


def start_profilers(service: Service, out_dir: Path, label: str, seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy record per API worker: raw collapsed stacks, only samples holding the GIL (= Python CPU
    work; threads waiting for the GIL or the database are left out), --nonblocking (server not paused)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        raise FileNotFoundError(f"{py_spy} is missing: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = label.replace(" ", "_").replace("/", "_").replace("{", "").replace("}", "")
    return [subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                              "--rate", "250", "--nonblocking", "--format", "raw", "--gil",
                              "--output", str(out_dir / f"{safe}.{pid}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for pid in service.api_pids()]


def http_phases(service: Service, args: argparse.Namespace) -> list[dict[str, object]]:
    headers = {"X-API-Key": service.api_key}
    # The job read under load: one of the seeded (finished, with metrics) jobs.
    first = httpx.get(f"{service.base_url}/v1/jobs?limit=1", headers=headers, timeout=30).json()
    job_id = first["items"][0]["id"]
    # The service under test must still authenticate and answer correctly (matters for --app variants).
    wrong = httpx.get(f"{service.base_url}/v1/jobs/{job_id}", headers={"X-API-Key": "sk_" + "x" * 43}, timeout=30)
    right = httpx.get(f"{service.base_url}/v1/jobs/{job_id}", headers=headers, timeout=30)
    if wrong.status_code != 401 or right.status_code != 200 or right.json()["id"] != job_id:
        raise RuntimeError(f"sanity check failed: wrong key -> {wrong.status_code}, right key -> {right.status_code}")
    rows = []
    account = CpuAccount(service.api.pid, service.admin_dsn, service.database_name)
    for concurrency in args.concurrency:
        for name, method, path, body in scenarios(job_id, args.list_limit):
            if args.endpoints and name not in args.endpoints:
                continue
            label = f"{name}@{concurrency}"
            profile = label if args.profile_dir and label in args.profile else None
            speed = machine_speed_ms()  # just before: the VM's speed drifts within a run too
            result, cpu = measure(service, account, method, path, body, concurrency, args, profile)
            row = {"endpoint": name, "connections": concurrency, **result.summary(), **cpu,
                   "load_avg_1m": os.getloadavg()[0], "speed_ms": speed}
            rows.append(row)
            print(f"{name:<18} c={concurrency:<3} {row['requests']:>6} req {row['rps']:8.1f} req/s  "
                  f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  errors {row['errors']} "
                  f"{row['statuses']} | CPU ms/req api {cpu['api_cpu_ms_per_req']:.2f} pg {cpu['pg_cpu_ms_per_req']:.2f} "
                  f"client {cpu['client_cpu_ms_per_req']:.2f}, new pg sessions {cpu['pg_new_sessions']} "
                  f"| load {row['load_avg_1m']:.1f} | speed {speed:.1f} ms", flush=True)
    account.close()
    return rows


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def queue_latency(stack: ExitStack, service: Service, jobs: int, timeout: float) -> dict[str, object]:
    """Submit tiny jobs one at a time to an idle worker; the first (cold child) is not counted."""
    cancelled = drain_queue(service)
    print(f"queue phase: cancelled {cancelled} jobs queued by the POST phases; starting a Celery worker",
          flush=True)
    start_celery_worker(stack, service)
    samples: list[dict[str, object]] = []
    with httpx.Client(base_url=service.base_url, headers={"X-API-Key": service.api_key}, timeout=30) as client:
        for i in range(jobs + 1):
            sent = time.time()
            job = client.post("/v1/jobs", json=TINY_JOB).raise_for_status().json()
            seen_running = None
            deadline = time.monotonic() + timeout
            while job["status"] not in TERMINAL and time.monotonic() < deadline:
                time.sleep(0.02)
                job = client.get(f"/v1/jobs/{job['id']}").raise_for_status().json()
                if seen_running is None and job["status"] != "queued":
                    seen_running = time.time()
            if job["status"] not in TERMINAL:
                raise TimeoutError(f"job {job['id']} still {job['status']} after {timeout:.0f} s; "
                                   f"worker log: {service.home / 'logs'}")
            sample = {"job": job["id"], "status": job["status"], "warmup": i == 0,
                      "submit_to_start_ms": (_at(job["started_at"]) - sent) * 1000 if job["started_at"] else None,
                      "created_to_start_ms": (_at(job["started_at"]) - _at(job["created_at"])) * 1000
                      if job["started_at"] else None,
                      "submit_to_seen_running_ms": (seen_running - sent) * 1000 if seen_running else None,
                      "submit_to_finish_ms": (_at(job["finished_at"]) - sent) * 1000}
            samples.append(sample)
            print(f"queue job {i}{' (warm-up)' if i == 0 else ''}: {job['status']}, submit->start "
                  f"{sample['submit_to_start_ms']:.1f} ms, submit->finished {sample['submit_to_finish_ms']:.0f} ms",
                  flush=True)
    counted = [s for s in samples if not s["warmup"]]
    starts = sorted(float(s["submit_to_start_ms"]) for s in counted if s["submit_to_start_ms"] is not None)
    return {"samples": samples, "jobs": len(counted),
            "errors": sum(s["status"] != "succeeded" or s["submit_to_start_ms"] is None for s in counted),
            "p50_ms": starts[(len(starts) - 1) // 2] if starts else float("nan"),
            "max_ms": starts[-1] if starts else float("nan")}


def print_table(rows: list[dict[str, object]], queue: dict[str, object] | None) -> None:
    print("\n| endpoint | connections | requests | req/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['endpoint']}` | {r['connections']} | {r['requests']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['errors']} |")
    if queue is not None:
        print(f"| queue: submit -> started_at (tiny svd job, idle worker) | 1 | {queue['jobs']} | - | "
              f"{queue['p50_ms']:.0f} | max {queue['max_ms']:.0f} | {queue['errors']} |")
    print("\nCPU per request (ms) by component, and the cores each used while measured:\n"
          "| endpoint | connections | API | PostgreSQL | load client | new PG sessions |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['endpoint']}` | {r['connections']} | {r['api_cpu_ms_per_req']:.2f} ({r['api_cores']:.2f} cores) | "
              f"{r['pg_cpu_ms_per_req']:.2f} ({r['pg_cores']:.2f}) | {r['client_cpu_ms_per_req']:.2f} "
              f"({r['client_cores']:.2f}) | {r['pg_new_sessions']} |")
    reads = [r for r in rows if r["endpoint"].startswith("GET") and r["connections"] == 64]
    if reads:
        met = all(r["p99_ms"] < TARGET_P99_MS and r["errors"] == 0 for r in reads)
        print(f"\ntarget (reads at 64 connections: p99 < {TARGET_P99_MS:.0f} ms, no errors): "
              f"{'MET' if met else 'MISSED'}")


def _code_version() -> dict[str, object]:
    """The commit measured, and which service files differed from it (others edit app/ meanwhile)."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True).stdout.rstrip()

    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--", "app", "worker", "compression/specs").splitlines()}


def machine_speed_ms() -> float:
    """The best of 5 timings of a fixed pure-Python loop, on an idle machine. The 2-core VM's speed
    drifts by 10-30 % between runs (the same code's CPU per request moves with it), so a table is
    read together with this number."""
    def loop() -> float:
        start = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i % 7
        return (time.perf_counter() - start) * 1000

    return min(loop() for _ in range(5))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2 = cores)")
    parser.add_argument("--listen", choices=["reuseport", "shared"], default="reuseport",
                        help="reuseport (default): one listening socket per API process (bench/reuseport_api.py); "
                        "shared: uvicorn --workers, whose workers accept unevenly")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                        help="service settings to override, e.g. SPECTRA_AUTH_CACHE_SECONDS=0")
    parser.add_argument("--app", default="app.main:create_app",
                        help="ASGI factory to serve (default: app.main:create_app)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--endpoints", nargs="+", choices=["GET /v1/jobs/{id}", "GET /v1/jobs", "POST /v1/jobs"],
                        help="measure only these (default: all three)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each scenario")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per scenario")
    parser.add_argument("--seed-jobs", type=int, default=1000, help="finished jobs in the benchmarked tenant")
    parser.add_argument("--list-limit", type=int, default=None, help="?limit= for GET /v1/jobs (default: "
                        "none, i.e. the API's default page of 50)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--accept-encoding", default="gzip, deflate",
                        help="the raw client's Accept-Encoding (default: httpx's and requests' default); '' = none, "
                             "so pages come uncompressed")
    parser.add_argument("--rate", type=float, default=0.0, help="paced mode: total requests/s spread over the "
                        "connections, latency from the scheduled send (raw client); 0 = closed loop (default)")
    parser.add_argument("--queue-jobs", type=int, default=5, help="counted queue-latency jobs (0 = skip)")
    parser.add_argument("--queue-timeout", type=float, default=300.0)
    parser.add_argument("--profile-dir", type=Path, help="record py-spy stacks of the API workers here")
    parser.add_argument("--profile", nargs="+", default=["GET /v1/jobs/{id}@64", "GET /v1/jobs@64"],
                        help="scenarios to profile, as 'ENDPOINT@CONNECTIONS'")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api_load.json")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.rate and args.client != "raw":
        raise SystemExit("--rate (paced mode) needs --client raw")
    load_before = os.getloadavg()
    speed_before = machine_speed_ms()
    print(f"machine speed: {speed_before:.1f} ms for a fixed Python loop (lower is faster); load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
          f"({os.cpu_count()} cpus); app {args.app}; API processes: {args.workers} ({args.listen}); client: {args.client} (Accept-Encoding: {args.accept_encoding or 'none'}); "
          f"rate limit raised to {BENCH_RATE_LIMIT_PER_MINUTE}/min per key", flush=True)
    queue = None
    with ExitStack() as stack:
        service = stack.enter_context(running_service(api_workers=args.workers, seed_jobs=args.seed_jobs,
                                                      job_spec=TINY_JOB, app_factory=args.app,
                                                      listen=args.listen, settings=dict(kv.split("=", 1) for kv in args.set)))
        rows = http_phases(service, args)
        if args.queue_jobs > 0:
            queue = queue_latency(stack, service, args.queue_jobs, args.queue_timeout)
    speed_after = machine_speed_ms()
    print_table(rows, queue)
    print(f"machine speed after: {speed_after:.1f} ms (before: {speed_before:.1f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(sys.argv), "when": datetime.now().astimezone().isoformat(timespec="seconds"),
        "code": _code_version(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_before": load_before,
                    "speed_ms_before": speed_before, "speed_ms_after": speed_after,
                    "load_avg_after": os.getloadavg()},
        "settings": {"app": args.app, "uvicorn_workers": args.workers, "listen": args.listen, "overrides": args.set, "client": args.client, "accept_encoding": args.accept_encoding, "rate": args.rate,
                     "seconds": args.seconds,
                     "warmup": args.warmup, "seed_jobs": args.seed_jobs, "list_limit": args.list_limit,
                     "rate_limit_per_minute": BENCH_RATE_LIMIT_PER_MINUTE},
        "rows": rows, "queue": queue}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
