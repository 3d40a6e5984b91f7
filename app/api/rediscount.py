"""A minimal Redis client for the rate limiter's counters: INCR and EXPIRE over one pipelined
connection per process, on the event loop.

Why not redis.asyncio: its per-command machinery (pool checkout with a health read, timeouts,
response parsing) costs ~130 us of CPU per INCR on the benchmark machine, a seventh of a whole
`GET /v1/jobs/{id}`; this costs ~25-35 us. It speaks just enough RESP for integer, status and
error replies, which is all INCR, EXPIRE, AUTH and SELECT answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import unquote, urlsplit


class CounterError(ConnectionError):
    """Redis refused a command or the connection failed; the limiter then counts in memory."""


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Replies(asyncio.Protocol):
    """Matches replies to commands in order (Redis answers a connection's commands in order)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[int | bytes]] = deque()
        self.buffer = b""
        self.closed = False
        self.outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, command: bytes) -> None:
        """Commands issued during one turn of the event loop leave in one write at its end. Under load a
        turn handles many requests, and each write is a system call, which on the benchmark VM cost as
        much as the rest of the INCR (bench/README.md); Redis answers them all in one reply packet too."""
        self.outgoing.append(command)
        if len(self.outgoing) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        data, self.outgoing = b"".join(self.outgoing), []
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.waiting:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
            future = self.waiting.popleft()
            if future.done():  # its caller timed out; the connection is being dropped anyway
                continue
            kind, body = line[:1], line[1:]
            if kind == b":":
                future.set_result(int(body))
            elif kind == b"+":
                future.set_result(body)
            else:
                future.set_exception(CounterError(f"Redis answered {line[:200]!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(CounterError(f"Redis connection lost: {exc}"))


class RedisCounter:
    def __init__(self, url: str, timeout: float = 0.5) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.tls = parts.scheme == "rediss"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.db = int(parts.path.strip("/") or 0)
        self.timeout = timeout
        self._replies: _Replies | None = None
        self._connecting: asyncio.Future[_Replies] | None = None

    async def _connect(self) -> _Replies:
        loop = asyncio.get_running_loop()
        _, replies = await asyncio.wait_for(loop.create_connection(
            _Replies, self.host, self.port, ssl=ssl.create_default_context() if self.tls else None), self.timeout)
        setup = []
        if self.password is not None:
            auth = [b"AUTH"] + ([self.username.encode()] if self.username else []) + [self.password.encode()]
            setup.append(_command(*auth))
        if self.db:
            setup.append(_command(b"SELECT", str(self.db).encode()))
        for command in setup:
            await self._send(replies, command)
        return replies

    async def _connection(self) -> _Replies:
        if self._replies is not None and not self._replies.closed:
            return self._replies
        connecting = self._connecting
        if connecting is None:  # one connect at a time; concurrent callers wait for the same one
            connecting = self._connecting = asyncio.ensure_future(self._connect())
        try:
            self._replies = await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None  # a failed connect is retried by the next call
        return self._replies

    async def _send(self, replies: _Replies, command: bytes) -> int | bytes:
        future: asyncio.Future[int | bytes] = asyncio.get_running_loop().create_future()
        replies.waiting.append(future)
        replies.send(command)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            if replies.transport is not None:
                replies.transport.close()  # later replies would be matched to the wrong commands
            raise CounterError(f"no answer from Redis within {self.timeout} s") from None

    async def incr(self, key: str, amount: int = 1) -> int:
        command = _command(b"INCR", key.encode()) if amount == 1 else _command(b"INCRBY", key.encode(), b"%d" % amount)
        return int(await self._send(await self._connection(), command))

    async def expire(self, key: str, seconds: int) -> None:
        await self._send(await self._connection(), _command(b"EXPIRE", key.encode(), str(seconds).encode()))

    def close(self) -> None:
        if self._replies is not None and self._replies.transport is not None:
            self._replies.transport.close()
        self._replies = None
