"""Follow one job's Server-Sent Events until it finishes: progress lines on stderr, the finished job's
JSON on stdout. Reconnects with Last-Event-ID when the connection drops, so nothing is missed.

    python scripts/follow_job.py http://127.0.0.1:8000 JOB_ID API_KEY > job.json
"""

from __future__ import annotations

import json
import sys
import time

import httpx


def _line(kind: str, event: dict) -> str:
    data = event.get("data") or {}
    fraction = data.get("fraction")
    share = "" if fraction is None else f" {100 * fraction:3.0f}%"
    if kind in ("stage", "progress"):
        return f"  {data.get('stage') or event['message']}{share} {data.get('message') or ''}".rstrip()
    return f"  [{kind}] {event['message']}"


def follow(api: str, job_id: str, key: str, attempts: int = 30) -> dict:
    last_id: str | None = None
    for _ in range(attempts):
        headers = {"X-API-Key": key, "Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
        try:
            with httpx.stream("GET", f"{api}/v1/jobs/{job_id}/events", headers=headers,
                              timeout=httpx.Timeout(10, read=60)) as response:
                response.raise_for_status()
                kind, data = "message", ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line.startswith("id:"):
                        last_id = line[3:].strip()
                    elif line == "" and data:
                        if kind == "job":
                            return dict(json.loads(data))
                        print(_line(kind, json.loads(data)), file=sys.stderr, flush=True)
                        kind, data = "message", ""
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                raise
            print(f"  (stream interrupted: {exc}; resuming after event {last_id})", file=sys.stderr)
            time.sleep(1)
    raise SystemExit(f"gave up following job {job_id} after {attempts} connections")


if __name__ == "__main__":
    print(json.dumps(follow(*sys.argv[1:4])))
