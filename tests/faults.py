"""Fault injection for the router's tests: a TCP proxy that can delay traffic to one cell, and steady load."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import httpx

from relay.embedded import free_port


class DelayProxy:
    """Forwards 127.0.0.1:port → 127.0.0.1:target, holding each upstream reply for `delay` seconds."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delayed: bool) -> None:
            """Copy one direction until EOF, then close the far side."""
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if delayed and self.delay:
                        await asyncio.sleep(self.delay)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def post(client: httpx.Client, key: dict[str, Any], text: str = "x") -> tuple[int, float, httpx.Response]:
    """One small bug report through the router: (status, seconds, response)."""
    began = time.monotonic()
    r = client.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": {"text": text}})
    return r.status_code, time.monotonic() - began, r


class Load:
    """Steady ingest into one region from a background thread, recording status and latency."""

    def __init__(self, url: str, key: dict[str, Any], every: float = 0.04) -> None:
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, key, every), daemon=True)
        self._thread.start()

    def _run(self, url: str, key: dict[str, Any], every: float) -> None:
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    status, took, _ = post(client, key)
                except httpx.TransportError:
                    status, took = 0, 10.0
                self.samples.append((time.monotonic(), status, took))
                time.sleep(every)

    def stop(self) -> list[tuple[float, int, float]]:
        self._stop.set()
        self._thread.join(15)
        return self.samples
