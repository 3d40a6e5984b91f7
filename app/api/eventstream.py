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
from app.schemas import EventOut, JobOut

BATCH = 500  # events per read: a long backlog goes out in pieces, never as one query result
RETRY_MS = 2000  # how long a disconnected EventSource waits before it reconnects
KEEPALIVE_SECONDS = 15.0  # a comment line now and then, so proxies keep an idle stream open


async def job_events(db: AsyncDatabase, hub: EventHub, job_id: str, after: int) -> AsyncIterator[bytes]:
    yield format_sse_event(retry=RETRY_MS)
    async with hub.watching(job_id) as woken:
        quiet_since = time.monotonic()
        while True:
            woken.clear()  # a change committed from here on wakes the wait below at once
            async with db.session() as session:
                # The job first: if it has finished, every event of it is committed, so the read
                # below sees them all before the final `job` event goes out.
                job = await session.run_sync(lambda s: crud.get_job(s, job_id=job_id))
                events = await session.run_sync(lambda s: crud.list_events(s, job_id=job_id, after_id=after,
                                                                           limit=BATCH))
            for row in events:
                yield format_sse_event(data_str=EventOut.from_row(row).model_dump_json(), event=row.kind,
                                       id=str(row.id))
                after = row.id
            if len(events) == BATCH:
                continue
            if job is None:  # deleted meanwhile: nothing more will come
                return
            if job.is_terminal:
                yield format_sse_event(data_str=JobOut.from_row(job).model_dump_json(), event="job", id=str(after))
                return
            if events:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                yield KEEPALIVE_COMMENT
                quiet_since = time.monotonic()
            await hub.next_change(woken)
