"""The breaker's half-open probe always resolves: a probe that ends with neither success nor failure
(the client went away, its body was too large) frees the probe slot instead of keeping the cell refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from aiohttp import web

from common.problems import Problem
from common.settings import CellEndpoint
from router.cells import Breaker, Cell
from router.proxy import Proxy, RouteClass, _stream

SMALL = RouteClass("uploads", 5.0, 16, stream=True)


@pytest.fixture
async def cell() -> AsyncIterator[Cell]:
    """A Cell in front of a real local HTTP server that reads the body and answers 201."""
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=201, text="ok")

    app = web.Application()
    app.router.add_post("/upload", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    c = Cell("us-west", CellEndpoint(url=f"http://127.0.0.1:{port}", tag="us", hop_secret="s" * 32), 8)
    try:
        yield c
    finally:
        await c.close()
        await runner.cleanup()


def _half_open(breaker: Breaker) -> None:
    breaker.cooldown = 0.05
    for _ in range(breaker.threshold):
        breaker.failure()
    assert breaker.state == "open" and not breaker.allow()


async def _wait_half_open(breaker: Breaker) -> None:
    await asyncio.sleep(breaker.cooldown + 0.02)
    assert breaker.state == "half-open"


def _receive(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> MutableMapping[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


async def _discard(message: MutableMapping[str, Any]) -> None:
    return None


async def _relay(cell: Cell, body: AsyncIterator[bytes]) -> int:
    return await Proxy(lambda: None)._relay(_discard, cell, "POST", "/upload", {}, body, SMALL, {})  # type: ignore[arg-type,return-value]


async def test_a_probe_whose_body_is_too_large_frees_the_probe_slot(cell: Cell) -> None:
    _half_open(cell.breaker)
    await _wait_half_open(cell.breaker)
    too_large = _receive({"type": "http.request", "body": b"x" * 10, "more_body": True},
                         {"type": "http.request", "body": b"x" * 10, "more_body": False})
    with pytest.raises(Problem) as raised:
        await _relay(cell, _stream(too_large, SMALL.max_body))
    assert raised.value.status == 413
    assert cell.in_flight == 0
    # The next request is let through as the probe, and its success closes the breaker.
    assert cell.breaker.state == "half-open"
    ok = _receive({"type": "http.request", "body": b"small", "more_body": False})
    assert await _relay(cell, _stream(ok, SMALL.max_body)) == 201
    assert cell.breaker.state == "closed"


async def test_a_probe_whose_client_went_away_frees_the_probe_slot(cell: Cell) -> None:
    _half_open(cell.breaker)
    await _wait_half_open(cell.breaker)
    gone = _receive({"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"})
    assert await _relay(cell, _stream(gone, SMALL.max_body)) == 499
    assert cell.in_flight == 0
    assert cell.breaker.allow()  # the slot is free: this call itself takes it as the next probe
    assert not cell.breaker.allow()  # and holds it: one probe at a time


async def test_a_saturated_cell_does_not_take_the_probe_slot(cell: Cell) -> None:
    _half_open(cell.breaker)
    await _wait_half_open(cell.breaker)
    cell.in_flight = cell.limit
    with pytest.raises(Problem) as raised:
        cell.admit()
    assert raised.value.status == 503
    cell.in_flight = 0
    assert cell.admit() is True  # still free for the next request to probe
    cell.release(True)
