"""Per-API-key request rate limit. 0 requests per minute disables it.

With a Redis broker the count lives in Redis (a fixed one-minute window per key), so every API
process enforces one shared limit: one pipelined round trip per request (INCR, and EXPIRE NX so the
window's key goes away by itself) through redis-py's asyncio client. Otherwise, or while Redis does
not answer, each process counts in memory (a sliding window) rather than refusing traffic.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque

from redis.asyncio import Redis

log = logging.getLogger(__name__)
# Keys remembered by the in-memory fallback, each at most `per_minute` timestamps: the bound on its memory.
MAX_MEMORY_KEYS = 100_000


class RateLimiter:
    def __init__(self, per_minute: int, window_seconds: float = 60.0, redis_url: str | None = None) -> None:
        self.per_minute = per_minute
        self.window = window_seconds
        self._hits: dict[str, deque[float]] = {}
        shared = per_minute > 0 and redis_url and redis_url.startswith(("redis://", "rediss://"))
        self._redis_url = redis_url if shared else None
        self._redis: Redis | None = None  # connects on first use, inside the app's event loop

    async def hit(self, key: str, now: float | None = None) -> int | None:
        """Record a request; None if allowed, else the seconds to wait (for Retry-After)."""
        if self.per_minute <= 0:
            return None
        if self._redis_url is not None:
            try:
                return await self._hit_redis(key, time.time() if now is None else now)
            except Exception as exc:  # Redis trouble must not take the API down with it
                log.warning("rate limiter: Redis unavailable, counting in memory: %s", exc)
        return self._hit_memory(key, time.monotonic() if now is None else now)

    async def _hit_redis(self, key: str, now: float) -> int | None:
        if self._redis is None:
            self._redis = Redis.from_url(self._redis_url or "", socket_timeout=0.5, socket_connect_timeout=0.5)
        window = int(now // self.window)
        name = f"spectra:ratelimit:{key}:{window}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(name)
            pipe.expire(name, int(self.window) * 2, nx=True)
            count, _ = await pipe.execute()
        if int(count) > self.per_minute:
            return max(1, math.ceil((window + 1) * self.window - now))
        return None

    def _hit_memory(self, key: str, now: float) -> int | None:
        # Called only from the event loop (one thread), so no lock is needed.
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return max(1, math.ceil(hits[0] + self.window - now))
        hits.append(now)
        if len(self._hits) > MAX_MEMORY_KEYS:
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
        return None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
