"""`api_keys.last_used_at` through the recorder the key verifier calls, against a real cell database:
written once per interval per key, in one statement for many keys, never moved back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import pytest

from cell.keys.usage import UsageRecorder
from common.ids import uuid7
from common.pg import create_pool
from tests.services import StorePostgres


@pytest.fixture(scope="module")
def dsn(pg: StorePostgres) -> str:
    return pg.migrated("key_usage_unit", "cell")


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(dsn, 2)
    yield p
    await p.close()


async def _keys(pool: asyncpg.Pool, n: int) -> list[uuid.UUID]:
    pid = uuid7()
    await pool.execute("INSERT INTO projects (id, name, region, secret) VALUES ($1, 'p', 'us-west', '\\x00')", pid)
    ids = [uuid7() for _ in range(n)]
    for key_id in ids:
        await pool.execute("""INSERT INTO api_keys (id, project_id, key_hash, key_prefix, name, scopes)
                              VALUES ($1, $2, 'x', $3, 'k', '{ingest}')""", key_id, pid, f"rk_us_{key_id.hex[-6:]}")
    return ids


async def _used_at(pool: asyncpg.Pool, key_id: uuid.UUID) -> datetime | None:
    at: datetime | None = await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)
    return at


async def test_uses_are_coalesced_per_interval(pool: asyncpg.Pool) -> None:
    first, second = await _keys(pool, 2)
    recorder = UsageRecorder(pool, interval=1.0)
    assert await _used_at(pool, first) is None
    for _ in range(50):
        recorder.used(first)
    recorder.used(second)
    assert await recorder.flush() == 2  # two keys, one statement, however many uses
    t1 = await _used_at(pool, first)
    assert t1 is not None and await _used_at(pool, second) is not None
    # More uses within the interval write nothing.
    for _ in range(20):
        recorder.used(first)
    assert await recorder.flush() == 0 and await _used_at(pool, first) == t1
    # After the interval the next use moves it.
    await asyncio.sleep(1.1)
    recorder.used(first)
    assert await recorder.flush() == 1
    t2 = await _used_at(pool, first)
    assert t2 is not None and t2 > t1


async def test_processes_coalesce_and_time_never_goes_back(pool: asyncpg.Pool) -> None:
    [key_id] = await _keys(pool, 1)
    a, b = UsageRecorder(pool, interval=60.0), UsageRecorder(pool, interval=60.0)
    a.used(key_id)
    await a.flush()
    t1 = await _used_at(pool, key_id)
    b.used(key_id)  # another process, within the minute: its write is left out by the database
    await b.flush()
    assert await _used_at(pool, key_id) == t1


async def test_the_background_writer_writes_and_close_flushes(pool: asyncpg.Pool) -> None:
    first, second = await _keys(pool, 2)
    recorder = UsageRecorder(pool, interval=60.0)
    recorder.start()
    recorder.used(first)
    for _ in range(40):
        if await _used_at(pool, first) is not None:
            break
        await asyncio.sleep(0.05)
    assert await _used_at(pool, first) is not None
    recorder.used(second)
    await recorder.close()
    assert await _used_at(pool, second) is not None
