"""Per-API-key request rate limit (sliding one-minute window, in this process's memory).

With several API processes each enforces the limit on its own share; a shared limiter (Redis)
would be the next step. 0 requests per minute disables the limit.
"""

from __future__ import annotations

import math
import time
from collections import deque
from threading import Lock


class RateLimiter:
    def __init__(self, per_minute: int, window_seconds: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window = window_seconds
        self._hits: dict[str, deque[float]] = {}
        self._lock = Lock()

    def hit(self, key: str, now: float | None = None) -> int | None:
        """Record a request; None if allowed, else the seconds to wait (for Retry-After)."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return max(1, math.ceil(hits[0] + self.window - now))
            hits.append(now)
            if len(self._hits) > 100_000:  # bound memory under key churn
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
            return None
