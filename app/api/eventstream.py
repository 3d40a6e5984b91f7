"""One job's events as Server-Sent Events (`GET /v1/jobs/{id}/events`, `Accept: text/event-stream`).

Each job_events row goes out once, in id order, as `event: <kind>` (state, stage, progress, message,
error) with `id: <event id>` and the EventOut JSON as data; when the job has finished, a last
`event: job` carries the whole JobOut (status, error, final metrics) and the stream ends. A client
that reconnects sends `Last-Event-ID` and gets exactly the events after it. The database is the only
source: app.api.eventhub only says when to look again. A stream holds no connection while it waits.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event

from app import crud
from app.api.eventhub import EventHub
from app.core.adb import AsyncDatabase
from app.jobstates import TERMINAL
from app.schemas import EventOut, JobOut

BATCH = 500  # events per read: a long backlog goes out in pieces, never as one query result
RETRY_MS = 2000  # how long a disconnected EventSource waits before it reconnects
KEEPALIVE_SECONDS = 15.0  # a comment line now and then, so proxies keep an idle stream open
FINISHED = frozenset(status.value for status in TERMINAL)


async def job_events(db: AsyncDatabase, hub: EventHub, job_id: str, after: int) -> AsyncIterator[bytes]:
    yield format_sse_event(retry=RETRY_MS)
    async with hub.watching(job_id) as woken:
        quiet_since = time.monotonic()
        look_at_job = True  # first, and whenever nothing woke the stream (the job may be gone)
        while True:
            woken.clear()  # a change committed from here on wakes the wait below at once
            async with db.session() as session:
                events = await session.run_sync(lambda s: crud.list_events(s, job_id=job_id, after_id=after,
                                                                           limit=BATCH))
                # Every status change writes an event with its status in the same transaction, so the
                # job row is read only when one of those arrived (or on the first and idle rounds):
                # half the queries per delivered progress event.
                if look_at_job or any((row.data or {}).get("status") in FINISHED for row in events):
                    job = await session.run_sync(lambda s: crud.get_job(s, job_id=job_id))
                    if job is None:  # deleted meanwhile: nothing more will come
                        return
                    finished = job.is_terminal
                else:
                    finished = False
            for row in events:
                yield format_sse_event(data_str=EventOut.from_row(row).model_dump_json(), event=row.kind,
                                       id=str(row.id))
                after = row.id
            if len(events) == BATCH:
                look_at_job = False
                continue
            if finished:
                # Read after the events: the finishing transaction's events were committed with it,
                # and one more read now catches any written in between.
                async with db.session() as session:
                    rest = await session.run_sync(lambda s: crud.list_events(s, job_id=job_id, after_id=after,
                                                                             limit=BATCH))
                for row in rest:
                    yield format_sse_event(data_str=EventOut.from_row(row).model_dump_json(), event=row.kind,
                                           id=str(row.id))
                    after = row.id
                yield format_sse_event(data_str=JobOut.from_row(job).model_dump_json(), event="job", id=str(after))
                return
            if events:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                yield KEEPALIVE_COMMENT
                quiet_since = time.monotonic()
            woken_in_time = await hub.next_change(woken)
            look_at_job = not woken_in_time
