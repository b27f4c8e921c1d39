"""How Relay's servers write answers (common.serve): a head leaves with its body in one send, and never waits.

uvicorn runs here with the protocol `serve` gives it, on a real socket; the server side's sends are counted
on the real transport, the client reads raw bytes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
import uvicorn

from common.serve import _OneWriteProtocol
from relay.embedded import free_port

SENDS: list[bytes] = []


class _Counting(_OneWriteProtocol):
    """The served protocol, with every send that reaches the socket recorded."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        real = transport.write

        def write(data: Any) -> None:
            SENDS.append(bytes(data))
            real(data)

        transport.write = write  # type: ignore[method-assign]
        super().connection_made(transport)


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":  # the head now, the body later: the head must not wait for it
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"late"})
        return
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=_Counting, lifespan="off", log_config=None,
                            access_log=False, server_header=False, date_header=False)
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())
    while not running.started:
        await asyncio.sleep(0.01)
    SENDS.clear()
    try:
        yield port
    finally:
        running.should_exit = True
        await task


def _exchange(port: int, requests: bytes, until: bytes, count: int = 1) -> list[tuple[float, bytes]]:
    """Send raw requests, return what arrived and when, until `until` was seen `count` times."""
    got: list[tuple[float, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        began = time.monotonic()
        sock.sendall(requests)
        seen = b""
        while seen.count(until) < count:
            data = sock.recv(65536)
            assert data, f"closed after {seen!r}"
            got.append((time.monotonic() - began, data))
            seen += data
    return got


async def test_a_small_answer_is_one_send_and_keep_alive_still_works(server: int) -> None:
    request = b"POST /ok HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
    got = await asyncio.to_thread(_exchange, server, request + request, b"\r\n\r\nok", 2)
    assert got[0][1].startswith(b"HTTP/1.1 201 Created\r\n")
    await asyncio.sleep(0.1)
    answers = [s for s in SENDS if s.startswith(b"HTTP/1.1 ")]
    assert len(answers) == 2, SENDS
    assert all(s.endswith(b"\r\n\r\nok") for s in answers), "head and body left in separate sends"
    assert len(SENDS) == 2


async def test_a_head_whose_body_comes_later_is_sent_at_once(server: int) -> None:
    got = await asyncio.to_thread(_exchange, server, b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n", b"late")
    head_at = next(t for t, data in got if data.startswith(b"HTTP/1.1 200"))
    body_at = next(t for t, data in got if data.endswith(b"late"))
    assert head_at < 0.15 < body_at, got  # the head did not wait for the body (which comes 0.3 s later)
    assert [s[-4:] for s in SENDS] == [b"\r\n\r\n", b"late"]
