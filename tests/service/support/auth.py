"""API keys checked the way the API checks X-API-Key: app.api.auth.authenticate on an AsyncDatabase,
with the key cache off, so every key is looked up in the database."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event

from app.api.auth import KeyCache, Principal, authenticate
from app.core.adb import AsyncDatabase
from app.security import hash_api_key


def authenticate_keys(database_url: str, keys: list[str]) -> tuple[list[Principal | None], int]:
    """The tenant of each key (None: refused), and how many queries the checks made in all."""

    async def check() -> tuple[list[Principal | None], int]:
        db = AsyncDatabase(database_url)
        queries = 0

        def counted(*_: Any) -> None:
            nonlocal queries
            queries += 1

        event.listen(db.engine.sync_engine, "before_cursor_execute", counted)
        try:
            return [await authenticate(db, KeyCache(0), key, hash_api_key(key)) for key in keys], queries
        finally:
            await db.dispose()

    return asyncio.run(check())


def tenant_of(database_url: str, key: str) -> Principal:
    """The tenant owning a valid key."""
    tenant = authenticate_keys(database_url, [key])[0][0]
    assert tenant is not None, "the key was refused"
    return tenant
