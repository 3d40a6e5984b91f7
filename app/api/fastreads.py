"""The two reads clients poll (`GET /v1/jobs/{id}`, `GET /v1/jobs`) served straight from ASGI.

FastAPI's routing, request objects and dependency solving were a third of a GET's CPU under load
(bench/README.md); at 64 connections on two cores that CPU is the latency. These two reads are
answered with the very functions their FastAPI routes use (app.api.deps.tenant_for_key,
app.api.jobreads, app.api.jobjson), so both give the same bytes, and every error goes through the
application's own exception handlers, so error bodies are the same too.

It runs before FastAPI's middleware stack (app.main.SpectraAPI calls it first): the stack's layers
(Starlette's error and exception layers, FastAPI's telemetry and body limit, ours) and their wrapped
`send`s were another fifth of the app's CPU for a GET with no body (bench/asgi_cpu.py, GET by id:
0.31 -> 0.25 ms). What the stack does for such a
request is done here with the same objects: an in-flight slot (app.api.middleware.RequestSlots) and
the request metrics under the route's template (RequestMetrics). A GET that some layer would act
on (one with a body, or a browser's Origin for CORS) goes through the stack.

It only takes requests it can answer exactly like the routes: anything unusual (an id that cannot
exist, an unknown or repeated query parameter, a value FastAPI would have to coerce or refuse) is
passed on untouched before any side effect, and FastAPI answers it as before. The FastAPI routes
stay registered: they document the endpoints in the OpenAPI schema and serve what is passed on.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app.api import jobreads
from app.api.deps import tenant_for_key
from app.api.jobcache import Page
from app.api.middleware import RequestMetrics, RequestSlots
from app.api.validation import JOB_ID, decode_cursor
from app.crud import Cursor
from app.jobstates import JobStatus
from compression.specs import Method

_PREFIX = "/v1/jobs/"
_LIMIT = re.compile(r"[1-9][0-9]{0,2}")  # the digits FastAPI reads as the same int, nothing to coerce
_STATUSES = frozenset(s.value for s in JobStatus)
_METHODS = frozenset(m.value for m in Method)
_CONTENT_TYPE = (b"content-type", b"application/json")
_VARY = (b"vary", b"Accept-Encoding")  # a page's bytes depend on it (as app.api.routes.jobs says too)
_GZIP = (b"content-encoding", b"gzip")
# Headers some middleware acts on: a request body (BodySizeLimit's 413) or a browser's Origin (CORS
# headers). Such a GET is rare; the whole stack answers it.
_STACK_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"origin"})


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


def accepts_gzip(value: bytes) -> bool:
    """Whether an Accept-Encoding value admits gzip: listed (or `*`) with a q-value above 0, and gzip
    not refused by name (RFC 9110 12.5.3)."""
    named = star = None
    for item in value.decode("latin-1").lower().split(","):
        coding, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, number = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(number)
                except ValueError:
                    q = 0.0
        coding = coding.strip()
        if coding in ("gzip", "x-gzip"):
            named = q > 0 if named is None else named or q > 0
        elif coding == "*":
            star = q > 0
    return named if named is not None else bool(star)


def _cursor(value: str) -> Cursor:
    if len(value) > 512:
        raise _PassOn
    try:
        return decode_cursor(value)
    except Exception:
        raise _PassOn from None


class FastReads:
    """Called by app.main.SpectraAPI before FastAPI's middleware stack; `answer` says whether it answered."""

    def __init__(self, api: FastAPI, slots: RequestSlots, recorder: RequestMetrics) -> None:
        self.api = api
        self.slots = slots
        self.recorder = recorder

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer one of the two reads, or return False before any side effect."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path") or self.api.root_path:
            return False
        path: str = scope["path"]
        if path == "/v1/jobs":
            template = "/v1/jobs"
        elif path.startswith(_PREFIX) and JOB_ID.fullmatch(path, len(_PREFIX)):
            template = "/v1/jobs/{job_id}"
        else:
            return False
        key = None
        encodings: list[bytes] = []
        for name, value in scope["headers"]:
            if name in _STACK_HEADERS:
                return False
            if name == b"x-api-key" and key is None:
                key = value.decode("latin-1")
            elif name == b"accept-encoding":
                encodings.append(value)
        gzip_ok = accepts_gzip(b",".join(encodings)) if encodings else False
        try:
            arguments = _list_arguments(scope["query_string"]) if template == "/v1/jobs" else None
        except _PassOn:
            return False
        # What the middleware stack would have done for this request: take a slot (InflightLimit) and
        # count it under its route template (HttpMetrics).
        started = time.perf_counter()
        status = 500
        try:
            async with self.slots.semaphore:
                status = await self._respond(scope, receive, send, key, arguments, gzip_ok)
        finally:
            self.recorder.record("GET", template, status, time.perf_counter() - started)
        return True

    async def _respond(self, scope: Scope, receive: Receive, send: Send, key: str | None,
                       arguments: dict[str, Any] | None, gzip_ok: bool) -> int:
        headers = [_CONTENT_TYPE]
        try:
            if arguments is None:
                body = await self._job(scope["path"], key)
            else:
                page = await self._page(key, arguments)
                headers.append(_VARY)
                gzipped = page.gzipped() if gzip_ok else None
                if gzipped is not None:
                    headers.append(_GZIP)
                body = page.body if gzipped is None else gzipped
        except Exception as exc:  # 401, 404, 429, 503...: rendered by the app's own handlers
            handler = self._handler(exc)
            if handler is None:
                raise
            scope["app"] = self.api  # as Starlette sets it, for handlers that read request.app
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return int(response.status_code)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return 200

    async def _job(self, path: str, key: str | None) -> bytes:
        tenant = await tenant_for_key(self.api.state, key)
        return await jobreads.job_or_404(self.api.state.db, job_id=path[len(_PREFIX):], tenant_id=tenant.id)

    async def _page(self, key: str | None, arguments: dict[str, Any]) -> Page:
        tenant = await tenant_for_key(self.api.state, key)
        return await jobreads.job_page(self.api.state.db, tenant_id=tenant.id, **arguments)

    def _handler(self, exc: Exception) -> Any:
        """The handler FastAPI would pick for this exception (the most specific registered class);
        `Exception`'s is the application's 500 answer."""
        handlers = self.api.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None
