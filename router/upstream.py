"""The router's client for the hop to a cell: HTTP/1.1 over a small keep-alive pool, parsed by httptools.

Why not aiohttp here: profiled under `bench/router.py`, a request through `aiohttp.ClientSession` spent more
of the router's CPU in building it (a `ClientRequest`, multidict headers, its automatic headers, timer
handles, a `StreamReader`) than in the proxy's own work. This client does what the hop needs and no more:

- a request goes out as one buffer (head and a buffered body in one `send`); a streamed upload goes out as
  it arrives, with the transport's flow control (`drain`), framed by its Content-Length or chunked;
- the answer is parsed by httptools (llhttp, in C) and its body handed on chunk by chunk as it arrives,
  reading paused while the caller falls behind, so an answer is never buffered whole;
- a connection goes back to the pool only when its answer was read to the end and both sides keep it
  alive; one the cell closed while idle is noticed (`connection_lost`) and never reused, and one idle longer
  than `idle_seconds` is dropped before the cell's own keep-alive would close it.

Failures before the answer's head arrived (refused, reset, closed, TLS refused) are `OSError`s, which the
proxy turns into 503s and its breaker counts; deadlines are the caller's (`asyncio.timeout`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

CONNECT_TIMEOUT = 1.0
"""Seconds to open a connection to a cell (TCP and TLS): a cell that does not accept in that long is down."""
_READ_HIGH_WATER = 256 * 1024
"""Bytes of an answer held unread before reading from the cell pauses until the caller catches up."""
_FRAMING = ("content-length", "transfer-encoding")
"""Headers this client sets itself from the body it sends."""


class HopError(ConnectionError):
    """The cell's connection failed or closed before a whole answer (an `OSError`, like a refused connect)."""


class _Connection(asyncio.Protocol):
    """One connection to a cell: the transport, its response parser and the answer being read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.alive = True
        self.idle_since = 0.0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.reusable = False
        self.reusable_after = True
        """False when the request was not sent whole (the cell answered first): never reuse."""
        self.error: BaseException | None = None
        self._head: asyncio.Future[None] | None = None
        self._more: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._interim = False
        self._reading_paused = False
        self._writing_paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one without subclassing it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HopError(f"the cell's answer is not HTTP: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if not self.complete:
            self._fail(HopError("the cell closed the connection before its answer ended"))
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(HopError("the cell closed the connection while a body was being sent"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._interim = status < 200  # 1xx (100 Continue): not the answer; the real one follows
        if self._interim:
            return
        self.status = status
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _READ_HIGH_WATER and not self._reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self.reusable = self.parser.should_keep_alive()
        self._wake()

    # the request's side

    def begin(self) -> asyncio.Future[None]:
        """Reset for a new exchange; the future resolves when the answer's head has arrived."""
        self.status, self.headers, self.complete, self.reusable, self.error = 0, [], False, False, None
        self.reusable_after = True
        self.chunks.clear()
        self.buffered = 0
        self._head = asyncio.get_running_loop().create_future()
        return self._head

    def write(self, data: bytes) -> None:
        if not self.alive or self.transport is None:
            raise HopError("the cell closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's buffer is above its high-water mark (a slow cell holds the upload)."""
        if self._writing_paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    async def next_chunk(self) -> bytes | None:
        """The next piece of the answer's body, or None at its end."""
        while not self.chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._more = asyncio.get_running_loop().create_future()
            await self._more
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self._reading_paused and self.buffered <= _READ_HIGH_WATER // 4 and self.transport is not None:
            self.transport.resume_reading()
            self._reading_paused = False
        return chunk

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: the caller may have stopped waiting (timeout)
        self._wake()


class Response:
    """A cell's answer: status and headers (names lower-case) at once, the body as it arrives.

    `close` must be called: it returns the connection to the pool when the answer was read to its end,
    and closes it otherwise (the caller stopped early, the client went away).
    """

    __slots__ = ("_conn", "_pool", "content_length", "headers", "status")

    def __init__(self, pool: Pool, conn: _Connection) -> None:
        self._pool, self._conn = pool, conn
        self.status = conn.status
        self.headers = conn.headers
        self.content_length: int | None = None
        for name, value in conn.headers:
            if name == b"content-length":
                try:
                    self.content_length = int(value)
                except ValueError:
                    self.content_length = None
                break

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, each piece as the cell sent it."""
        while (chunk := await self._conn.next_chunk()) is not None:
            yield chunk

    def close(self) -> None:
        conn, self._pool.in_use = self._conn, self._pool.in_use - 1
        if conn.complete and conn.reusable and conn.reusable_after and conn.alive and not conn.chunks:
            conn.idle_since = time.monotonic()
            self._pool.idle.append(conn)
        else:
            conn.close()


class Pool:
    """Keep-alive connections to one cell. How many are in use is bounded by the caller (the cell's bulkhead)."""

    def __init__(self, url: str, tls: ssl.SSLContext | None, idle_seconds: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = tls
        self.idle_seconds = idle_seconds
        self.idle: deque[_Connection] = deque()
        """Oldest on the left: reused from the right (the warmest), expired ones dropped from the left."""
        self.in_use = 0
        self._host_line = f"host: {parts.netloc}\r\n".encode("latin-1")

    async def request(self, method: str, target: str, headers: dict[str, str],
                      body: bytes | AsyncIterator[bytes] | None) -> Response:
        """Send a request and return once the answer's head arrived. `target` is sent byte for byte as given;
        a buffered body's Content-Length is its length, a streamed one keeps the given Content-Length or is
        chunked."""
        conn = await self._connection()
        self.in_use += 1
        try:
            head = conn.begin()
            lines = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), self._host_line]
            lines.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items() if k not in _FRAMING)
            if isinstance(body, bytes | None):
                data = body or b""
                if data or method not in ("GET", "HEAD"):
                    lines.append(b"content-length: %d\r\n" % len(data))
                lines.append(b"\r\n")
                conn.write(b"".join(lines) + data)
            else:
                await self._stream(conn, lines, headers.get("content-length"), body, head)
            await head
        except BaseException:
            self.in_use -= 1
            conn.close()
            raise
        response = Response(self, conn)
        if method == "HEAD":  # no body follows, whatever its headers say; the parser cannot be told, so no reuse
            conn.complete, conn.reusable = True, False
        return response

    async def _stream(self, conn: _Connection, lines: list[bytes], length: str | None,
                      body: AsyncIterator[bytes], head: asyncio.Future[None]) -> None:
        """Send a streamed body as it arrives. A cell that answers before the end (it refused the request)
        stops the upload: its answer is what the caller gets, and the connection is not reused."""
        chunked = length is None
        framing = b"transfer-encoding: chunked" if length is None else b"content-length: " + length.encode()
        lines.append(framing + b"\r\n\r\n")
        conn.write(b"".join(lines))
        try:
            async for chunk in body:
                if head.done():
                    conn.reusable_after = False
                    return
                if chunk:
                    conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await conn.drain()
        except OSError:
            if not head.done() or head.cancelled() or head.exception() is not None:
                raise
            conn.reusable_after = False
            return
        if chunked:
            conn.write(b"0\r\n\r\n")

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self.idle and (not self.idle[0].alive or now - self.idle[0].idle_since >= self.idle_seconds):
            self.idle.popleft().close()  # so that a burst's connections do not sit open long after it
        while self.idle:
            conn = self.idle.pop()  # the most recently used: the least likely to be closing
            if conn.alive:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, self.host, self.port, ssl=self.tls,
                                   server_hostname=self.host if self.tls else None),
            CONNECT_TIMEOUT)
        return conn

    def close(self) -> None:
        """Close every idle connection (those in use close when their answers do)."""
        for conn in self.idle:
            conn.close()
        self.idle.clear()

