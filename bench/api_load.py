"""Load benchmark of the Spectra API (issue #15): an open loop of GETs (by id, list, events as JSON) at
a fixed total rate while SSE streams follow running jobs whose progress a synthetic worker writes.

    nice -n 10 .venv/bin/python bench/api_load.py                      # 1000 req/s + 200 streams, 20 s
    nice -n 10 .venv/bin/python bench/api_load.py --rate 300 --streams 60 --seconds 10   # reduced scale

It builds the service and removes it at exit (bench/load_stack.py: a fresh PostgreSQL database, an
unused Redis db, 2 API processes, --seed-jobs finished jobs per tenant), then:
- `--jobs` running jobs of the benchmarked tenant, each followed by streams/jobs SSE clients
  (`GET /v1/jobs/{id}/events`, `Accept: text/event-stream`, starting after the job's last event);
- a writer thread in this process that plays the worker: `--writes` progress events per second over
  those jobs, each committed as the worker's JobTracker commits them (app.crud, the after-commit
  publish of app.jobevents through Redis), stamped with the wall-clock time just before the commit;
- the open loop: `--rate` requests/s in total, 40 % GET /v1/jobs/{id}, 30 % GET /v1/jobs (50 slim
  items), 30 % GET /v1/jobs/{id}/events (JSON), each sent at its scheduled moment and timed from
  it, so a server that falls behind is charged for the wait (no coordinated omission).
Reported: per GET kind, requests, p50/p99 (ms) and errors (non-2xx or transport errors); for the
streams, events delivered, events missed (written after a stream started, never received), and the
delivery latency from the writer's commit to the client's read, p50/p99 (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load_client import Result, build_request, run_raw  # noqa: E402
from bench.load_stack import Service, running_service  # noqa: E402

TINY_JOB: dict[str, object] = {
    "model": "raincandy-u/TinyStories-656K", "method": "svd", "target_ratio": 0.2,
    "calibration": {"source": "tinystories", "samples": 4, "seq_len": 64},
    "evaluation": {"corpus": "tinystories", "seq_len": 128, "max_windows": 2},
}
MIX = (("GET /v1/jobs/{id}", 0.4), ("GET /v1/jobs", 0.3), ("GET /v1/jobs/{id}/events", 0.3))


def api_cpu_seconds(service: Service) -> float:
    """utime + stime of the API processes so far (on a shared machine, CPU per request is the number
    that does not depend on what else runs; latency does)."""
    total = 0
    for pid in service.api_pids():
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))] * 1000


def running_jobs(service: Service, count: int) -> dict[str, int]:
    """`count` running jobs of the benchmarked tenant -> the id of each one's last event."""
    from app import crud
    from app.core.db import session_scope
    from compression.specs import JobSpec

    spec = JobSpec.model_validate(TINY_JOB).model_dump(mode="json")
    last: dict[str, int] = {}
    with session_scope(service.database_url) as session:
        tenant = crud.get_or_create_tenant(session, name="load")
        for _ in range(count):
            job = crud.create_job(session, tenant_id=tenant.id, spec=spec)
            crud.claim_job(session, job_id=job.id, worker="bench-writer", stale_after=3600)
            last[job.id] = crud.list_events(session, job_id=job.id)[-1].id
    return last


def write_progress(service: Service, jobs: list[str], per_second: float, stop: threading.Event,
                   written: dict[str, list[tuple[int, float]]]) -> None:
    """The worker's side: one progress event at a time, round robin over the jobs, at `per_second`."""
    from app import crud, jobevents
    from app.core.db import session_scope

    jobevents.publish_through(service.broker_url)
    step, due = 0, time.perf_counter()
    while not stop.is_set():
        due += 1.0 / per_second
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        job_id = jobs[step % len(jobs)]
        layer = step // len(jobs)
        with session_scope(service.database_url) as session:
            crud.set_progress(session, job_id=job_id, stage="compress", fraction=None, message=f"layer {layer}")
            event = crud.add_event(session, job_id=job_id, kind="progress", message=f"layer {layer}",
                                   data={"stage": "compress", "layer": layer, "t": time.time()})
        written[job_id].append((event.id, time.perf_counter()))
        step += 1


async def follow(base_url: str, key: str, job_id: str, after: int, stop_at: float,
                 latencies: list[float], received: set[int]) -> int:
    """One SSE client: reads `data:` lines of the chunked stream until stop_at; returns transport errors."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write((f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {key}\r\n"
                  f"Accept: text/event-stream\r\nLast-Event-ID: {after}\r\n\r\n").encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return 1
        while True:
            line = await asyncio.wait_for(reader.readline(), max(0.01, stop_at - time.perf_counter()))
            if not line:
                return 1  # the server hung up early
            if line.startswith(b"data: "):
                now = time.time()
                event = json.loads(line[6:])
                if (event.get("data") or {}).get("t") is not None:
                    latencies.append(now - event["data"]["t"])
                    received.add(event["id"])
    except TimeoutError:
        return 0
    except (OSError, asyncio.IncompleteReadError):
        return 1
    finally:
        writer.close()


async def measure(service: Service, args: argparse.Namespace, finished_id: str, last: dict[str, int]) -> dict:
    jobs = list(last)
    written: dict[str, list[tuple[int, float]]] = defaultdict(list)
    latencies: list[float] = []
    followed = [jobs[i % len(jobs)] for i in range(args.streams)]
    received: list[set[int]] = [set() for _ in followed]
    stop = threading.Event()
    stop_at = time.perf_counter() + 1.0 + args.warmup + args.seconds
    streams = [asyncio.create_task(follow(service.base_url, service.api_key, job_id, last[job_id], stop_at,
                                          latencies, got)) for job_id, got in zip(followed, received)]
    await asyncio.sleep(1.0)  # every stream connected before the first write
    writer = threading.Thread(target=write_progress, args=(service, jobs, args.writes, stop, written), daemon=True)
    writer.start()
    paths = {"GET /v1/jobs/{id}": f"/v1/jobs/{finished_id}", "GET /v1/jobs": "/v1/jobs",
             "GET /v1/jobs/{id}/events": f"/v1/jobs/{jobs[0]}/events?after={last[jobs[0]]}"}
    loads = [run_raw(service.base_url, build_request(service.base_url, "GET", paths[name], service.api_key, None, ""),
                     args.connections, args.seconds, args.warmup, 10**9, rate=args.rate * share)
             for name, share in MIX]
    cpu_before = api_cpu_seconds(service)
    results: list[Result] = await asyncio.gather(*loads)
    cpu = api_cpu_seconds(service) - cpu_before
    errors = await asyncio.gather(*streams)
    stop.set()
    writer.join(timeout=10)
    # An event is owed to every stream of its job if it was written a second before the streams stopped.
    owed = {job_id: {i for i, at in ids if at < stop_at - 1.0} for job_id, ids in written.items()}
    missed = sum(len(owed.get(job_id, set()) - got) for job_id, got in zip(followed, received))
    handled = sum(len(r.latencies) for r in results) + len(latencies)
    return {"api_cpu_ms_per_request": 1000 * cpu / max(1, handled), "api_cpu_seconds": cpu,
            "gets": {name: r.summary() for (name, _), r in zip(MIX, results)},
            "sse": {"streams": args.streams, "written": sum(len(ids) for ids in written.values()),
                    "delivered": len(latencies), "missed": missed, "stream_errors": sum(errors),
                    "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
                    "max_ms": max(latencies, default=0.0) * 1000}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="GET requests per second, all kinds together")
    parser.add_argument("--streams", type=int, default=200, help="open SSE streams")
    parser.add_argument("--jobs", type=int, default=20, help="running jobs the streams follow")
    parser.add_argument("--writes", type=float, default=40.0, help="progress events per second over those jobs")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections per GET kind")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--seed-jobs", type=int, default=1000)
    args = parser.parse_args()
    with running_service(api_workers=args.api_workers, seed_jobs=args.seed_jobs, job_spec=TINY_JOB) as service:
        from sqlalchemy import select

        from app.core.db import session_scope
        from app.models import Job

        with session_scope(service.database_url) as session:
            finished_id = session.scalar(select(Job.id).where(Job.status == "succeeded").limit(1))
        last = running_jobs(service, args.jobs)
        report = asyncio.run(measure(service, args, str(finished_id), last))
    print(f"open loop {args.rate:g} GET/s for {args.seconds:g} s (after {args.warmup:g} s warm-up), "
          f"{args.streams} SSE streams on {args.jobs} running jobs, {args.writes:g} progress writes/s, "
          f"{args.api_workers} API processes")
    print("| request | sent/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|")
    for name, row in report["gets"].items():
        print(f"| {name} | {row['rps']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} |")
    sse = report["sse"]
    print(f"| SSE delivery (write -> client) | {sse['delivered']} events | {sse['p50_ms']:.1f} | {sse['p99_ms']:.1f} "
          f"| {sse['stream_errors']} streams failed, {sse['missed']} events missed |")
    print(f"API CPU per request (GETs and delivered events together, warm-up included): "
          f"{report['api_cpu_ms_per_request']:.2f} ms")
    print(json.dumps(report, indent=1, default=str), file=sys.stderr)


if __name__ == "__main__":
    main()
