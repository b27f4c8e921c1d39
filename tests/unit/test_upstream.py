"""The router's hop client (router.upstream) against real HTTP servers on loopback.

An aiohttp server plays a well-behaved cell (keep-alive, chunked answers, uploads read as they come); a raw
asyncio server plays a broken one (closes mid-answer, answers garbage, answers before the upload ended).
What matters: answers arrive whole and in order, a connection is reused only when it is known good, and a
cell that fails before its answer's head is an OSError (a 503 and a breaker failure in the proxy).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from router.upstream import HopError, Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def cell() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A cell on aiohttp: echoes what it got, answers in chunks, counts the connections it accepted."""
    seen: dict[str, Any] = {"peers": set(), "bodies": []}

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        seen["peers"].add(request.transport.get_extra_info("peername") if request.transport else None)
        result: web.StreamResponse = await handler(request)
        return result

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen["bodies"].append(body)
        return web.json_response({"method": request.method, "path": request.raw_path, "length": len(body),
                                  "chunked": request.headers.get("Transfer-Encoding") == "chunked",
                                  "host": request.headers.get("Host"), "x": request.headers.get("X-Relay-Test")},
                                 status=201)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for i in range(5):
                await response.write(b"part%d;" % i)
                await asyncio.sleep(0.01)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client stopped reading (a test that closes early)
        return response

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=b"z" * (3 * 1024 * 1024))

    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[count])
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/large", large)
    runner = web.AppRunner(app, keepalive_timeout=75)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def _raw(handler: Handler) -> tuple[str, asyncio.Server]:
    """A broken cell: `handler` answers, then the connection stays open until the client closes it."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
            await reader.read()  # until the client hangs up
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server


async def _body(response: Any) -> bytes:
    return b"".join([chunk async for chunk in response.chunks()])


async def test_a_buffered_request_is_answered_and_its_connection_reused(cell: tuple[str, dict[str, Any]]) -> None:
    url, seen = cell
    pool = Pool(url, None, 30)
    for i in range(3):
        response = await pool.request("POST", f"/echo?n={i}", {"x-relay-test": "yes"}, b'{"a": 1}')
        assert response.status == 201
        assert dict(response.headers)[b"content-type"].startswith(b"application/json")
        assert b'"length": 8' in await _body(response)
        response.close()
    assert len(seen["peers"]) == 1, "three requests, one keep-alive connection"
    assert pool.in_use == 0 and len(pool.idle) == 1
    pool.close()


async def test_the_target_goes_out_byte_for_byte_and_host_names_the_cell(cell: tuple[str, dict[str, Any]]) -> None:
    url, _ = cell
    pool = Pool(url, None, 30)
    response = await pool.request("GET", "/echo?q=a%2Fb&x=%7E", {}, b"")
    text = await _body(response)
    response.close()
    assert b'"path": "/echo?q=a%2Fb&x=%7E"' in text  # as signed: not re-quoted
    assert url.removeprefix("http://").encode() in text
    pool.close()


async def test_a_chunked_answer_arrives_whole_in_order(cell: tuple[str, dict[str, Any]]) -> None:
    url, _ = cell
    pool = Pool(url, None, 30)
    response = await pool.request("GET", "/chunked", {}, None)
    assert response.content_length is None
    assert await _body(response) == b"part0;part1;part2;part3;part4;"
    response.close()
    assert len(pool.idle) == 1
    pool.close()


async def test_a_large_answer_is_read_with_flow_control(cell: tuple[str, dict[str, Any]]) -> None:
    url, _ = cell
    pool = Pool(url, None, 30)
    response = await pool.request("GET", "/large", {}, None)
    total = 0
    async for chunk in response.chunks():
        total += len(chunk)
        await asyncio.sleep(0)  # a slow reader: the client pauses reading instead of buffering it all
    assert total == response.content_length == 3 * 1024 * 1024
    response.close()
    pool.close()


async def test_an_answer_closed_early_is_not_reused(cell: tuple[str, dict[str, Any]]) -> None:
    url, seen = cell
    pool = Pool(url, None, 30)
    response = await pool.request("GET", "/chunked", {}, None)
    async for _ in response.chunks():
        break  # the caller stops (the client went away)
    response.close()
    assert not pool.idle
    response = await pool.request("POST", "/echo", {}, b"x")
    assert response.status == 201
    await _body(response)
    response.close()
    assert len(seen["peers"]) == 2
    pool.close()


async def test_streamed_uploads_with_and_without_a_length(cell: tuple[str, dict[str, Any]]) -> None:
    url, seen = cell
    pool = Pool(url, None, 30)

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 100_000
            await asyncio.sleep(0)

    response = await pool.request("PUT", "/echo", {"content-length": "400000"}, parts())
    text = await _body(response)
    response.close()
    assert b'"length": 400000' in text and b'"chunked": false' in text
    response = await pool.request("PUT", "/echo", {}, parts())
    text = await _body(response)
    response.close()
    assert b'"length": 400000' in text and b'"chunked": true' in text
    assert seen["bodies"][-2:] == [b"y" * 400_000, b"y" * 400_000]
    assert len(seen["peers"]) == 1
    pool.close()


async def test_a_connection_the_cell_closed_while_idle_is_not_used(cell: tuple[str, dict[str, Any]]) -> None:
    url, seen = cell
    pool = Pool(url, None, 30)
    response = await pool.request("POST", "/echo", {}, b"1")
    await _body(response)
    response.close()
    pool.idle[0].transport.close()  # type: ignore[union-attr]  # as a cell ending an idle keep-alive would
    await asyncio.sleep(0.05)
    response = await pool.request("POST", "/echo", {}, b"2")
    assert response.status == 201
    await _body(response)
    response.close()
    assert len(seen["peers"]) == 2, "a new connection, not the closed one (which would have been a 503)"
    pool.close()


async def test_a_connection_idle_too_long_is_dropped(cell: tuple[str, dict[str, Any]]) -> None:
    url, seen = cell
    pool = Pool(url, None, 0.05)
    for _ in range(2):
        response = await pool.request("POST", "/echo", {}, b"1")
        await _body(response)
        response.close()
        await asyncio.sleep(0.1)
    assert len(seen["peers"]) == 2
    pool.close()


async def test_a_refused_connection_is_an_oserror() -> None:
    url, server = await _raw(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await Pool(url, None, 30).request("GET", "/", {}, None)


async def test_a_cell_that_closes_before_answering_is_a_hop_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Cre")
        await writer.drain()
        writer.close()

    url, server = await _raw(hang_up)
    pool = Pool(url, None, 30)
    with pytest.raises(HopError):
        await pool.request("GET", "/", {}, None)
    assert pool.in_use == 0
    server.close()


async def test_a_body_cut_short_fails_the_reader_and_garbage_is_a_hop_error() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    url, server = await _raw(short)
    pool = Pool(url, None, 30)
    response = await pool.request("GET", "/", {}, None)
    with pytest.raises(HopError):
        await _body(response)
    response.close()
    assert not pool.idle
    server.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    url, server = await _raw(garbage)
    with pytest.raises(HopError):
        await Pool(url, None, 30).request("GET", "/", {}, None)
    server.close()


async def test_an_interim_answer_is_skipped_and_an_early_refusal_is_relayed() -> None:
    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    url, server = await _raw(early)
    pool = Pool(url, None, 30)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"u" * 65536
            await asyncio.sleep(0.01)

    response = await asyncio.wait_for(pool.request("POST", "/", {}, endless()), 5)
    assert response.status == 413
    assert await _body(response) == b"big"
    response.close()
    assert not pool.idle, "the upload was cut short: the connection cannot carry another request"
    server.close()


async def test_a_head_answer_has_no_body() -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    url, server = await _raw(head)
    pool = Pool(url, None, 30)
    response = await asyncio.wait_for(pool.request("HEAD", "/", {}, None), 2)
    assert response.status == 200 and response.content_length == 1234
    assert await asyncio.wait_for(_body(response), 1) == b""
    response.close()
    server.close()


async def test_a_burst_leaves_no_connections_open_long_after_it(cell: tuple[str, dict[str, Any]]) -> None:
    url, seen = cell
    pool = Pool(url, None, 0.2)

    async def one() -> None:
        response = await pool.request("POST", "/echo", {}, b"1")
        await _body(response)
        response.close()

    await asyncio.gather(*(one() for _ in range(4)))
    assert len(pool.idle) == len(seen["peers"]) == 4
    await asyncio.sleep(0.3)
    await one()  # the expired ones are closed on the way, not only the one it would have taken
    assert len(pool.idle) == 1
    pool.close()
