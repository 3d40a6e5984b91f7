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


class BodyGuard:
    """Read a request's whole body before the application sees the request, within `max_bytes`
    (413) and within `deadline` seconds (408), then hand it on in one piece.

    It sits outside InflightLimit: a client that sends its headers and then trickles (or never sends)
    its body holds only its own socket and this coroutine, never one of the in-flight slots, so a
    slow-body attack cannot keep other tenants' requests waiting; it is cut off at the deadline.
    Bodies are small (JSON job specs, at most SPECTRA_MAX_BODY_BYTES), so holding one whole is cheap.

    Uploads (`uploads`: path -> (limit, setting); files of up to SPECTRA_DATASET_MAX_BYTES) are not
    held whole: they stream to the route under their own limit, and each piece must arrive within
    `deadline` seconds of the previous one (a stalled upload is cut off; a slow one holds its slot).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, deadline: float,
                 uploads: dict[str, tuple[int, str]] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, setting = self.uploads.get(scope["path"], (self.max_bytes, "SPECTRA_MAX_BODY_BYTES"))
        too_big = f"request body larger than {max_bytes} bytes ({setting}); send less"
        declared = None
        has_body = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, {"detail": "invalid Content-Length header"})
                    return
                has_body = declared > 0
            elif name == b"transfer-encoding":
                has_body = True
        if declared is not None and declared > max_bytes:
            await _send_json(send, 413, {"detail": too_big})
            return
        if not has_body:
            await self.app(scope, receive, send)
        elif scope["path"] in self.uploads:
            await self._stream(scope, receive, send, max_bytes, too_big)
        else:
            await self._whole(scope, receive, send, too_big)

    def _late(self) -> dict[str, str]:
        return {"detail": f"the request body did not arrive within {self.deadline:g} s "
                          "(SPECTRA_BODY_TIMEOUT_SECONDS); send it at once"}

    async def _whole(self, scope: Scope, receive: Receive, send: Send, too_big: str) -> None:
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(self.deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left; nothing to answer
                    chunk = message.get("body", b"")
                    received += len(chunk)
                    if received > self.max_bytes:
                        await _send_json(send, 413, {"detail": too_big})
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _send_json(send, 408, self._late())
            return
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: only http.disconnect is left to come

        await self.app(scope, replay, send)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, max_bytes: int, too_big: str) -> None:
        received = 0
        started = refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            try:
                msg = await asyncio.wait_for(receive(), self.deadline)
            except TimeoutError:
                if not started:
                    refused = True
                    await _send_json(send, 408, self._late())
                return {"type": "http.disconnect"}  # the route stops reading
            if msg["type"] == "http.request" and not refused:
                received += len(msg.get("body", b""))
                if received > max_bytes and not started:
                    # Answer 413 ourselves, then tell the app the client left so it stops reading.
                    refused = True
                    await _send_json(send, 413, {"detail": too_big})
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: Message) -> None:
            nonlocal started
            if refused:  # whatever the app answers after our 413 / 408 is dropped
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

    EXEMPT = ("/v1/artifacts/download", "/healthz", "/metrics")  # and event streams: they hold no
    # connection while they wait (app.api.eventstream), and may stay open for hours

    def __init__(self, app: ASGIApp, slots: RequestSlots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(self.EXEMPT) or _is_stream(scope):
            await self.app(scope, receive, send)
            return
        async with self.slots.semaphore:
            await self.app(scope, receive, send)


def _is_stream(scope: Scope) -> bool:
    """A request for Server-Sent Events (app.api.eventstream)."""
    return scope.get("method") == "GET" and any(
        name == b"accept" and b"text/event-stream" in value for name, value in scope.get("headers", ()))
