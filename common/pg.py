"""Postgres pools as both services use them: JSON columns as Python objects via msgspec."""

from __future__ import annotations

import asyncpg
import msgspec


async def _init(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, schema="pg_catalog", format="text",
            encoder=lambda v: msgspec.json.encode(v).decode(), decoder=msgspec.json.decode,
        )


async def create_pool(dsn: str, max_size: int, *, min_size: int = 1, timeout: float = 10.0) -> asyncpg.Pool:
    """A pool whose connections speak JSON as Python objects.

    With `min_size=0` it connects on first use, so a process can start while the database is down.
    """
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init, timeout=timeout)
    assert pool is not None
    return pool
