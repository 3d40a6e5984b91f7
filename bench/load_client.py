"""A closed-loop HTTP/1.1 load generator: `concurrency` keep-alive connections, each sending the next
request as soon as the previous answer arrived (what wrk does), for a fixed time or request budget.

Why not httpx: on a 2-core machine the client shares the CPU with the server, and httpx costs several
times more CPU per request than the handful of socket reads here, so it would measure itself. The
`httpx` client stays available (--client httpx) to cross-check the numbers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Result:
    """Samples of one scenario, taken after the warm-up."""

    latencies: list[float] = field(default_factory=list)  # seconds, one per finished request
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "202", "ConnectionResetError", ...
    window: float = 0.0  # seconds of measurement

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))] * 1000

    def summary(self) -> dict[str, object]:
        n = len(self.latencies)
        return {"requests": n, "rps": n / self.window if self.window else 0.0,
                "p50_ms": self.percentile(0.50), "p90_ms": self.percentile(0.90), "p99_ms": self.percentile(0.99),
                "max_ms": max(self.latencies, default=0.0) * 1000, "errors": self.errors,
                "statuses": dict(self.statuses), "seconds": self.window}


def build_request(base_url: str, method: str, path: str, api_key: str, body: dict[str, object] | None,
                  accept_encoding: str = "gzip, deflate") -> bytes:
    """accept_encoding: what httpx and requests send by default; "" sends none (identity). The client
    reads the body as sent and never decodes it (as wrk does)."""
    host = urlsplit(base_url).netloc
    payload = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"X-API-Key: {api_key}", "Accept: application/json",
            "User-Agent: spectra-bench"] + ([f"Accept-Encoding: {accept_encoding}"] if accept_encoding else [])
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server wants the connection closed). Reads and discards the body. Bytes searches, not
    a header dict: the client shares the two cores with the server, so its CPU is kept small."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head[9:12])  # "http/1.1 200 ..."
    if b"\r\ntransfer-encoding: chunked\r\n" in head:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            await reader.readexactly(int(head[at + 17:head.index(b"\r\n", at + 2)]))
    return status, b"\r\nconnection: close\r\n" in head


async def _connection(host: str, port: int, request: bytes, start_at: float, stop_at: float,
                      budget: list[int], result: Result, interval: float | None, phase: float) -> None:
    """Closed loop (interval None): send again as soon as the answer arrived. Paced: send at
    phase + k * interval and count latency from that scheduled moment, so a server that falls
    behind is charged for the wait (no coordinated omission)."""
    reader = writer = None
    scheduled = start_at - 1.0 + phase if interval else 0.0
    while time.perf_counter() < stop_at and budget[0] > 0:
        if interval:
            scheduled += interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if scheduled >= stop_at:
                break
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        began = scheduled if interval else time.perf_counter()
        try:
            writer.write(request)
            status, close = await _read_response(reader)  # type: ignore[arg-type]
            outcome = str(status)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome, close = type(exc).__name__, True
        if began >= start_at:  # warm-up requests are not counted
            result.latencies.append(time.perf_counter() - began)
            result.statuses[outcome] += 1
            budget[0] -= 1
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def _call_at_start(warmup: float, on_start: Callable[[], None] | None) -> None:
    """Run on_start (e.g. a CPU snapshot) when the measured window opens."""
    if on_start is not None:
        asyncio.get_running_loop().call_later(warmup, on_start)


async def run_raw(base_url: str, request: bytes, concurrency: int, seconds: float, warmup: float,
                  max_requests: int, on_start: Callable[[], None] | None = None, rate: float = 0.0) -> Result:
    """rate > 0: paced at `rate` requests/s in total, spread evenly over the connections."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = Result()
    _call_at_start(warmup, on_start)
    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    budget = [max_requests]
    interval = concurrency / rate if rate > 0 else None
    await asyncio.gather(*(_connection(host, port, request, start_at, stop_at, budget, result, interval,
                                       (interval or 0.0) * i / concurrency)
                           for i in range(concurrency)))
    result.window = min(time.perf_counter(), stop_at) - start_at
    return result


async def run_httpx(base_url: str, method: str, path: str, api_key: str, body: dict[str, object] | None,
                    concurrency: int, seconds: float, warmup: float, max_requests: int,
                    on_start: Callable[[], None] | None = None) -> Result:
    import httpx

    result = Result()
    _call_at_start(warmup, on_start)
    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    budget = [max_requests]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": api_key}, limits=limits,
                                 timeout=30) as client:
        async def loop() -> None:
            while time.perf_counter() < stop_at and budget[0] > 0:
                began = time.perf_counter()
                try:
                    outcome = str((await client.request(method, path, json=body)).status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                if began >= start_at:
                    result.latencies.append(time.perf_counter() - began)
                    result.statuses[outcome] += 1
                    budget[0] -= 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    result.window = min(time.perf_counter(), stop_at) - start_at
    return result
