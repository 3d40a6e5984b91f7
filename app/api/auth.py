"""API key -> tenant, on the event loop, with a short per-process cache.

Every authenticated request used to cost two queries (the key, then the lazily loaded tenant).
Now it is one join, and its answer is kept per process for `SPECTRA_AUTH_CACHE_SECONDS` (default
5 s): a revoked key therefore keeps working for at most that long in each API process that has
just seen it. 0 turns the cache off (immediate revocation). Only valid keys are cached, so a new
key works at once and a flood of wrong keys cannot fill the memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from app.core.adb import AsyncDatabase
from app.models import ApiKey, Tenant
from app.security import key_matches, looks_like_api_key

MAX_CACHED_KEYS = 10_000
_BY_HASH = (
    select(ApiKey.key_hash, ApiKey.id.label("key_id"), Tenant.id, Tenant.name)
    .join(Tenant, Tenant.id == ApiKey.tenant_id)
    .where(ApiKey.key_hash == bindparam("digest"), ApiKey.revoked_at.is_(None))
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated tenant: all a route needs (the ORM row would tie it to a session)."""

    id: int
    name: str
    key_id: int = 0  # the API key used: download links carry it, so revoking the key revokes them too


class KeyCache:
    """sha256(key) -> (Principal, expiry), per process."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._entries.pop(digest, None)
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= MAX_CACHED_KEYS:
            self._entries.clear()  # rare (that many live keys in 5 s); the next requests refill it
        self._entries[digest] = (principal, time.monotonic() + self.ttl)


async def authenticate(db: AsyncDatabase, cache: KeyCache, key: str, digest: str) -> Principal | None:
    """The tenant owning this unrevoked key, or None. Lookup by hash, then a constant-time check."""
    principal = cache.get(digest)
    if principal is not None:
        return principal
    if not looks_like_api_key(key):
        return None
    async with db.session() as session:
        row = (await session.execute(_BY_HASH, {"digest": digest})).first()
    if row is None or not key_matches(key, row.key_hash):
        return None
    principal = Principal(id=int(row.id), name=str(row.name), key_id=int(row.key_id))
    cache.put(digest, principal)
    return principal

