"""Where an API request's CPU goes, from the py-spy raw stacks that `bench/api_load.py --profile-dir` records.

    .venv/bin/python bench/profile_summary.py /tmp/prof/GET__v1_jobs_id@64.*.txt

Each sample is put in the first bucket whose marker appears in its stack (most specific first), so
the buckets add up to 100 % of the samples that held the GIL.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# (bucket, markers): a stack belongs to the first bucket with a marker among its frames.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    # The async request path (since the load work of issue #6).
    ("auth: API key lookup on a cache miss (app.api.auth)", ("authenticate (app/api/auth",)),
    ("rate limiter: Redis INCR (app.api.rediscount)", ("RateLimiter.hit (app/api",)),
    ("query: psycopg read (app.core.pgreads)", ("PgReads.read (app/core",)),
    ("query: SQLAlchemy async read (SQLite)", ("AsyncDatabase.read (app/core",)),
    ("POST: insert + commit (AsyncSession.run_sync)", ("AsyncSession.run_sync", "create_job.<locals>.insert")),
    ("response: job_json + orjson", ("job_json (app/api", "JsonBytes.render", "dumps (app/api/jobjson")),
    # The sync request path before it (bench/README.md's first profile).
    ("auth: API key lookup + tenant (crud.authenticate)", ("authenticate (app/crud",)),
    ("auth: rest of current_tenant (hash, rate limiter)", ("current_tenant (app/api",)),
    ("DB pool: new connections (psycopg connect)", ("Pool._create_connection", "_ConnectionRecord.__connect")),
    ("DB pool: checkout + pre-ping", ("_ConnectionFairy._checkout", "pre_ping", "_do_ping")),
    ("query: get_job", ("get_job (app/crud",)),
    ("query: list_jobs (incl. JSON columns decode)", ("list_jobs (app/crud",)),
    ("query: create_job + commit", ("create_job (app/crud", "Session.commit")),
    ("enqueue: Celery send_task to Redis", ("enqueue_compress (app/queue",)),
    ("request body: JobSpec validation", ("_validate_request_body", "request_body_to_args", "JobSpec")),
    ("pydantic: JobOut.from_row", ("JobOut.from_row",)),
    ("response: serialize + JSON encode", ("serialize_response", "JSONResponse.render", "_accepted (app/")),
    ("session close / rollback", ("Session.close", "get_session (app/api")),
    ("SQLAlchemy session + ORM setup in the handler", ("leaf:sqlalchemy/",)),
    ("threadpool hand-off (anyio to_thread, thread wake-ups)", ("leaf:anyio/", "leaf:(queue.py", "leaf:(threading.py",
                                                              "leaf:concurrency.py")),
    ("metrics middleware (prometheus)", ("prometheus_client", "leaf:app/api/middleware.py")),
    ("FastAPI/Starlette: routing, dependencies, middleware", ("leaf:fastapi/", "leaf:starlette/", "leaf:contextlib",
                                                             "leaf:opentelemetry")),
    ("uvicorn HTTP + socket writes", ("leaf:uvicorn/", "leaf:asyncio/")),
]


def _matches(marker: str, joined: str, leaf: str) -> bool:
    """'leaf:X' matches X in the innermost frame only; other markers match anywhere in the stack."""
    return marker[5:] in leaf if marker.startswith("leaf:") else marker in joined


def summarize(paths: list[Path]) -> tuple[int, Counter[str], Counter[str]]:
    buckets: Counter[str] = Counter()
    others: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            joined = ";".join(frames)
            bucket = next((name for name, markers in BUCKETS if any(_matches(m, joined, frames[-1])
                                                                      for m in markers)), "other")
            buckets[bucket] += n
            if bucket == "other":
                others[frames[-1]] += n
    return total, buckets, others


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    total, buckets, others = summarize(args.files)
    print(f"{total} samples holding the GIL\n\n| where | share |\n|---|---:|")
    for name, n in buckets.most_common():
        print(f"| {name} | {100 * n / max(total, 1):.1f} % |")
    print("\n'other', innermost frames: " + "; ".join(f"{f} {100 * n / max(total, 1):.1f} %"
                                                      for f, n in others.most_common(8)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
