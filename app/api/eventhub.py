"""Wakes this API process's event streams when their job has new events.

One Redis pub/sub subscription per process (app.jobevents.CHANNEL, carrying job ids), however many
streams are open; each stream waits on an asyncio.Event of its own. The wake-up is only a hint: a
stream always reads its events from the database, and also looks every `poll_seconds` by itself, so
a lost message, a Redis outage or an embedded server without Redis delays an event, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from app.jobevents import CHANNEL

log = logging.getLogger(__name__)
# How often a stream reads the database when nothing woke it: with Redis a safety net, without it
# (the embedded default) the way streams follow the database.
POLL_WITH_REDIS = 2.0
POLL_WITHOUT_REDIS = 0.5


class EventHub:
    def __init__(self, redis_url: str | None) -> None:
        self._url = redis_url if redis_url and redis_url.startswith(("redis://", "rediss://")) else None
        self.poll_seconds = POLL_WITH_REDIS if self._url else POLL_WITHOUT_REDIS
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._redis: Redis | None = None

    @contextlib.asynccontextmanager
    async def watching(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An Event set whenever the job may have new events. A stream clears it before each read of
        the database, so a change committed during the read sets it again and is never waited out."""
        if self._url is not None and (self._listener is None or self._listener.done()):
            self._listener = asyncio.create_task(self._listen())
        woken = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(woken)
        try:
            yield woken
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[job_id]

    async def next_change(self, woken: asyncio.Event) -> bool:
        """Wait until `woken` is set (True) or poll_seconds have passed (False)."""
        try:
            await asyncio.wait_for(woken.wait(), self.poll_seconds)
        except TimeoutError:
            return False
        return True

    def wake(self, job_id: str) -> None:
        for woken in self._waiters.get(job_id, ()):
            woken.set()

    async def publish(self, job_id: str) -> None:
        """A change made by this process (a cancel): wake its own streams, and the other processes'."""
        self.wake(job_id)
        if self._url is None:
            return
        try:
            if self._redis is None:
                self._redis = Redis.from_url(self._url, socket_timeout=0.5, socket_connect_timeout=0.5)
            await self._redis.publish(CHANNEL, job_id)
        except Exception as exc:  # the other processes' streams find it at their next poll
            log.warning("could not publish job events: %s", exc)

    async def _listen(self) -> None:
        while self._waiters:
            try:
                client = Redis.from_url(self._url or "", socket_connect_timeout=2)
                async with client, client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    while self._waiters:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            self.wake(message["data"].decode())
            except Exception as exc:  # streams keep polling the database meanwhile
                log.warning("event hub: Redis subscription failed, retrying: %s", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()
