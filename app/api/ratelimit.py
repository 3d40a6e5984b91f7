"""Per-API-key request rate limit. 0 requests per minute disables it.

With a Redis broker the count lives in Redis (a fixed one-minute window per key), so every API
process enforces one shared limit; otherwise each process counts in memory (a sliding window).
If Redis stops answering, the limiter falls back to memory rather than refusing traffic.
The Redis round trip is awaited on the event loop (app.api.rediscount), never on a worker thread.

Each process takes requests from the shared count in small leases (INCRBY n, n about 1 % of the limit,
at most 16), not one INCR per request: under load the round trip and Redis's own CPU were ~10 % of
a cheap GET's cost. A lease never admits more than the limit across all processes (the count
in Redis is exact, and a lease that crosses the limit is granted only up to it). What a process has
leased and not used by the window's end is lost, so a key may get up to (processes x (n - 1)) fewer
requests than its limit in a window: with the default n that is ~1 % per process. Limits under
200 per minute lease one request at a time, i.e. count exactly as before.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque

from app.api.rediscount import RedisCounter

log = logging.getLogger(__name__)
MAX_LEASE = 16


class RateLimiter:
    def __init__(self, per_minute: int, window_seconds: float = 60.0, redis_url: str | None = None) -> None:
        self.per_minute = per_minute
        self.window = window_seconds
        self._hits: dict[str, deque[float]] = {}
        shared = per_minute > 0 and redis_url and redis_url.startswith(("redis://", "rediss://"))
        self._redis_url = redis_url if shared else None
        self._redis: RedisCounter | None = None  # connects on first use, inside the app's event loop
        self.lease = max(1, min(MAX_LEASE, per_minute // 100))
        self._leased: dict[str, tuple[int, int]] = {}  # key -> (window, requests leased and not yet used)

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
        window = int(now // self.window)
        if self._take_leased(key, window):
            return None
        if self._redis is None:
            self._redis = RedisCounter(self._redis_url, timeout=0.5)
        name = f"spectra:ratelimit:{key}:{window}"
        # The TTL is set by the window's first lease only. The key is per window, so an EXPIRE lost
        # to a crash in between leaves one stale counter nobody reads.
        count = await self._redis.incr(name, self.lease)
        if count == self.lease:
            await self._redis.expire(name, int(self.window) * 2)
        granted = min(self.lease, self.per_minute - (count - self.lease))  # up to the limit, never past it
        if granted <= 0:
            return max(1, math.ceil((window + 1) * self.window - now))
        if granted > 1:
            self._keep_leased(key, window, granted - 1)
        return None

    def _take_leased(self, key: str, window: int) -> bool:
        entry = self._leased.get(key)
        if entry is None or entry[0] != window or entry[1] <= 0:
            return False
        self._leased[key] = (window, entry[1] - 1)
        return True

    def _keep_leased(self, key: str, window: int, requests: int) -> None:
        entry = self._leased.get(key)
        kept = entry[1] if entry is not None and entry[0] == window else 0
        if len(self._leased) > 100_000:  # bound memory under key churn; what is dropped is only unused
            self._leased = {}
        self._leased[key] = (window, kept + requests)

    def _hit_memory(self, key: str, now: float) -> int | None:
        # Called only from the event loop (one thread), so no lock is needed.
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return max(1, math.ceil(hits[0] + self.window - now))
        hits.append(now)
        if len(self._hits) > 100_000:  # bound memory under key churn
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
        return None

    async def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
