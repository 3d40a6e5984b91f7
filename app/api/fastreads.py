"""The two reads clients poll (`GET /v1/jobs/{id}`, `GET /v1/jobs`) served straight from ASGI.

FastAPI's routing, request objects and dependency solving were a third of a GET's CPU under load
(bench/README.md); at 64 connections on two cores that CPU is the latency. This middleware answers
those two reads with the very functions their FastAPI routes use (app.api.deps.tenant_for_key,
app.api.jobreads, app.api.jobjson), so both give the same bytes, and every error goes through the
application's own exception handlers, so error bodies are the same too.

It only takes requests it can answer exactly like the routes: anything unusual (an id that cannot
exist, an unknown or repeated query parameter, a value FastAPI would have to coerce or refuse) is
passed on untouched before any side effect, and FastAPI answers it as before. The FastAPI routes
stay registered: they document the endpoints in the OpenAPI schema and serve what is passed on.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import jobreads
from app.api.deps import tenant_for_key
from app.api.validation import decode_cursor
from app.crud import Cursor
from app.jobstates import JobStatus
from compression.specs import Method

_PREFIX = "/v1/jobs/"
_LIMIT = re.compile(r"[1-9][0-9]{0,2}")  # the digits FastAPI reads as the same int, nothing to coerce
_STATUSES = frozenset(s.value for s in JobStatus)
_METHODS = frozenset(m.value for m in Method)
_CONTENT_TYPE = (b"content-type", b"application/json")


class _PassOn(Exception):
    """The request is not one this fast path answers exactly like FastAPI: let FastAPI answer it."""


def _list_arguments(query_string: bytes) -> dict[str, Any]:
    """list_jobs' parameters from the query string, or _PassOn where FastAPI's own validation
    is needed (its 422 bodies are the ones clients get)."""
    status = method = after = None
    limit = 50
    seen: set[str] = set()
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            raise _PassOn
        seen.add(name)
        if name == "status":
            if value not in _STATUSES:
                raise _PassOn
            status = value
        elif name == "method":
            if value not in _METHODS:
                raise _PassOn
            method = value
        elif name == "limit":
            if not _LIMIT.fullmatch(value) or int(value) > 200:
                raise _PassOn
            limit = int(value)
        elif name == "cursor":
            after = _cursor(value)
        else:  # FastAPI would ignore it, but the route may have gained a parameter this does not know
            raise _PassOn
    return {"status": status, "method": method, "limit": limit, "after": after}


def _cursor(value: str) -> Cursor:
    if len(value) > 512:
        raise _PassOn
    try:
        return decode_cursor(value)
    except Exception:
        raise _PassOn from None


def _all_routes(routes: list[Any]) -> list[Any]:
    """Routes, looking into included routers (FastAPI keeps them nested, as `original_router`)."""
    found = []
    for route in routes:
        nested = getattr(route, "original_router", None)
        found.extend(_all_routes(nested.routes) if nested is not None else [route])
    return found


class FastReads:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._routes: dict[str, Any] | None = None

    def _route(self, template: str) -> Any:
        """The FastAPI route object, put in the scope for app.api.middleware.HttpMetrics' labels."""
        if self._routes is None:
            self._routes = {getattr(r, "path", ""): r for r in _all_routes(self.api.router.routes)
                            if "GET" in (getattr(r, "methods", None) or ())}
        return self._routes[template]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/v1/jobs":
            template = "/v1/jobs"
        elif path.startswith(_PREFIX) and jobreads.JOB_ID.fullmatch(path, len(_PREFIX)):
            template = "/v1/jobs/{job_id}"
        else:
            await self.app(scope, receive, send)
            return
        try:
            arguments = _list_arguments(scope["query_string"]) if template == "/v1/jobs" else None
        except _PassOn:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route(template)
        try:
            status, body = await self._answer(scope, path, arguments)
        except Exception as exc:  # 401, 404, 429, 503...: rendered by the app's own handlers
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [_CONTENT_TYPE, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, path: str, arguments: dict[str, Any] | None) -> tuple[int, bytes]:
        state = self.api.state
        key = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-api-key"), None)
        tenant = await tenant_for_key(state, key)
        if arguments is not None:
            return 200, await jobreads.job_page(state.db, tenant_id=tenant.id, **arguments)
        return 200, await jobreads.job_or_404(state.db, job_id=path[len(_PREFIX):], tenant_id=tenant.id)

    def _handler(self, exc: Exception) -> Any:
        """The handler FastAPI would pick for this exception (the most specific registered class);
        `Exception`'s is the application's 500 answer."""
        handlers = self.api.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None
