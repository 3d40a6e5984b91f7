"""JSON answers that a client can revalidate: ETag, 304 on If-None-Match, Cache-Control: no-cache.

The ETag is a digest of the body itself, so it changes exactly when the answer does, whatever wrote
the row. A poller sends the last ETag back and gets an empty 304 while nothing changed: the
database is still read (a change must show at once), but nothing is sent again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

# Clients may keep the answer but must revalidate it before each use (RFC 9111 5.2.2.4).
CACHE_CONTROL = "no-cache"


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: weak comparison against each listed tag, or `*`."""
    wanted = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


def revalidatable(request: Request, content: Any, headers: dict[str, str] | None = None,
                  status_code: int = 200) -> Response:
    """`content` as JSON with its ETag, or an empty 304 when the client already holds that ETag."""
    response = JSONResponse(content, status_code=status_code, headers=headers)
    etag = '"' + hashlib.blake2b(response.body, digest_size=16).hexdigest() + '"'
    shared = {"ETag": etag, "Cache-Control": CACHE_CONTROL, **(headers or {})}
    if status_code == 200 and _matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=shared)
    response.headers.update(shared)
    return response
