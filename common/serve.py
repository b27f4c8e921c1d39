"""Serving an ASGI app in this process, shutting down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from common import telemetry

KEEP_ALIVE_SECONDS = 75
"""How long an idle connection stays open. Longer than any client of ours keeps one idle (the router's
pool to a cell: `router.cells.POOL_IDLE_SECONDS`), so a client never reuses one the server is closing —
which fails at once, looking like a dead cell. uvicorn's default, 5 s, is shorter than most pools'."""


class _HeadWithBody:
    """A transport that sends an answer's head together with what follows it in the same loop iteration.

    uvicorn writes the status line and headers on `http.response.start` and the body on
    `http.response.body`: two sends, two TCP segments, two wake-ups of the caller, for answers that are
    almost all one small body sent right after the head. Held here, the head goes out with the first
    body write, or on its own at the end of the loop iteration (`call_soon`) or before a close, so nothing
    waits longer than the step that wrote it and the order of bytes never changes. Everything else is the
    real transport's.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data[:9] == b"HTTP/1.1 " and data[9:10] != b"1" and data[-4:] == b"\r\n\r\n":  # a final answer's head
            self._held = data
            self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over `_HeadWithBody`: a small answer leaves in one send."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport, self.loop))  # type: ignore[arg-type]


def serve(app: Any, host: str, port: int, *, name: str, region: str | None = None,
          tls: tuple[str, str] | None = None) -> None:
    """Run `app` with uvicorn (uvloop, httptools; an answer's head and body in one send) until a signal;
    in-flight requests finish first.

    `tls` is (certificate chain, private key) as PEM files: the server then speaks only HTTPS.
    """
    telemetry.setup(name, region)
    cert, key = tls or (None, None)
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http=_OneWriteProtocol, lifespan="on",
        access_log=False, server_header=False, date_header=False, log_level="warning", log_config=None,
        timeout_graceful_shutdown=10, backlog=2048, proxy_headers=False, timeout_keep_alive=KEEP_ALIVE_SECONDS,
        ssl_certfile=cert, ssl_keyfile=key,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        telemetry.shutdown()
