"""ASGI middleware: in-flight request limit, body size limit (413) and HTTP metrics. Pure ASGI so streaming stays cheap."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import AppMetrics


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


class BodySizeLimit:
    """Refuse bodies over max_bytes: from Content-Length up front, or while reading a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int, uploads: dict[str, tuple[int, str]] | None = None) -> None:
        """uploads: path -> (limit, setting) for the upload routes, whose bodies are files, not JSON."""
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, setting = self.uploads.get(scope["path"], (self.max_bytes, "SPECTRA_MAX_BODY_BYTES"))
        message = f"request body larger than {max_bytes} bytes ({setting}); send less"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > max_bytes
                except ValueError:
                    await _send_json(send, 400, {"detail": "invalid Content-Length header"})
                    return
                if too_big:
                    await _send_json(send, 413, {"detail": message})
                    return
        received = 0
        started = refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            msg = await receive()
            if msg["type"] == "http.request" and not refused:
                received += len(msg.get("body", b""))
                if received > max_bytes and not started:
                    # Answer 413 ourselves, then tell the app the client left so it stops reading.
                    refused = True
                    await _send_json(send, 413, {"detail": message})
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: Message) -> None:
            nonlocal started
            if refused:  # whatever the app answers after our 413 is dropped
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        await self.app(scope, limited_receive, guarded_send)


class RequestMetrics:
    """spectra_http_requests_total and the latency histogram, labelled by route template."""

    def __init__(self, metrics: AppMetrics) -> None:
        self.metrics = metrics
        # One entry per series the two metrics hold anyway (method x route template x status).
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def record(self, method: str, template: str, status: int, seconds: float) -> None:
        labels = (method, template, status)
        children = self._children.get(labels)
        if children is None:  # labels() validates and locks each time: look each series up once
            children = self._children[labels] = (
                self.metrics.requests.labels(method, template, str(status)), self.metrics.latency.labels(method, template))
        children[0].inc()
        children[1].observe(seconds)


class HttpMetrics:
    def __init__(self, app: ASGIApp, recorder: RequestMetrics) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def recording_send(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            # The route template, never the raw path: job ids would explode the label set.
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            self.recorder.record(scope.get("method", ""), template, status, time.perf_counter() - start)


class RequestSlots:
    """At most `limit` requests of one process at once, taken by InflightLimit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore: asyncio.Semaphore | None = None  # created inside the running loop

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        return self._semaphore


class InflightLimit:
    """Let at most `slots.limit` requests run at once per process; the rest wait here, in the event loop.

    The limit is the async pool's size (app.core.adb.API_POOL_SIZE), so an admitted request never
    waits on the pool and a burst cannot end in pool_timeout errors. Waiting here costs nothing and
    holds no connection. Downloads and probes that use no
    session are exempt, so a slow download never takes a slot.
    """

    EXEMPT = ("/v1/artifacts/download", "/healthz", "/metrics")

    def __init__(self, app: ASGIApp, slots: RequestSlots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(self.EXEMPT):
            await self.app(scope, receive, send)
            return
        async with self.slots.semaphore:
            await self.app(scope, receive, send)
