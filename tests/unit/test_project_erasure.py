"""The project eraser against a real Postgres and object directory: cut short anywhere, it resumes, and its receipt
still counts what the project held when the erasure began; and the router's merge of two audit logs pages
exactly under one cursor."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from cell.projects import erasure
from cell.residency import receipts
from cell.storage import ObjectStore, project_key
from common.audit import AuditEntry
from common.ids import uuid7
from common.paging import decode_cursor
from common.pg import create_pool
from router.audit import merge
from tests.services import StorePostgres, offline_cell_settings


async def _project(conn: asyncpg.Connection, store: ObjectStore, users: int, objects: int) -> uuid.UUID:
    pid = uuid7()
    await conn.execute("INSERT INTO projects (id, name, region, secret) VALUES ($1, 'p', 'eu-west', $2)",
                       pid, secrets.token_bytes(32))
    await conn.executemany("INSERT INTO end_users (id, project_id, external_user_id) VALUES ($1, $2, $3)",
                           [(uuid7(), pid, f"u{n}") for n in range(users)])
    for n in range(objects):
        await store.put(project_key(pid, "media", f"o{n}"), b"x" * 10)
    return pid


@pytest.fixture(scope="module")
def dsn(pg: StorePostgres) -> str:
    return pg.migrated("erasure_unit", "cell")


async def test_an_erasure_cut_short_resumes_and_counts_everything(dsn: str, tmp_path: Path) -> None:
    settings = offline_cell_settings(dsn, tmp_path)
    store = ObjectStore(settings.object_store)
    pool = await create_pool(dsn, 4)
    try:
        async with pool.acquire() as conn:
            pid = await _project(conn, store, users=7, objects=erasure.OBJECT_BATCH + 5)
            neighbour = await _project(conn, store, users=2, objects=1)
        why = {"reason": "project deleted", "deletion_id": str(uuid7())}

        # Out of time at once: the counts are taken, nothing else happens yet.
        assert await erasure.erase(pool, store, settings, pid, why, deadline=time.monotonic()) is None
        assert len(await store.keys(f"projects/{pid}/")) == erasure.OBJECT_BATCH + 5
        # A crash after part of the work committed (a batch of objects and some rows gone) ...
        for key, _ in (await store.keys(f"projects/{pid}/"))[:3]:
            await store.delete(key)
        await pool.execute("DELETE FROM end_users WHERE id IN (SELECT id FROM end_users WHERE project_id = $1"
                           " LIMIT 4)", pid)
        # ... and the next call finishes it.
        sealed = await erasure.erase(pool, store, settings, pid, why)
        assert sealed is not None
        assert sealed.body["deleted"] == {"rows": {"end_users": 7, "projects": 1},
                                          "objects": erasure.OBJECT_BATCH + 5, "bytes": 10 * (erasure.OBJECT_BATCH + 5)}
        assert sealed.body["remaining"] == {"rows": 0, "objects": 0,
                                            "tables_checked": sealed.body["remaining"]["tables_checked"]}
        assert sealed.body["reason"] == "project deleted" and sealed.body["project_id"] == str(pid)
        assert await store.keys(f"projects/{pid}/") == []
        assert not await pool.fetchval("SELECT count(*) FROM end_users WHERE project_id = $1", pid)
        assert not await pool.fetchval("SELECT count(*) FROM projects WHERE id = $1", pid)
        assert receipts.verify_chain(await receipts.chain(pool)).ok
        # The same deletion asked again finds its receipt; the neighbour lost nothing.
        again = await erasure.receipt_for(pool, pid, "deletion_id", why["deletion_id"])
        assert again is not None and again.hash == sealed.hash
        assert await pool.fetchval("SELECT count(*) FROM end_users WHERE project_id = $1", neighbour) == 2
        assert len(await store.keys(f"projects/{neighbour}/")) == 1
    finally:
        await pool.close()


def _entry(at: datetime, source: str) -> AuditEntry:
    return AuditEntry(id=uuid7(), actor_type="admin", actor_id=None, action="x", target_type=None, target_id=None,
                      meta={}, ip_address=None, created_at=at, source=source)


def test_merged_pages_walk_both_logs_exactly_once() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    router = [_entry(base + timedelta(seconds=s), "router") for s in (1, 2, 2, 5, 9)]
    cell = [_entry(base + timedelta(seconds=s), "eu-west") for s in (2, 3, 4, 9, 10, 11)]
    everything = sorted(router + cell, key=lambda e: (e.created_at, e.id), reverse=True)

    def after(entries: list[AuditEntry], cursor: str | None) -> list[AuditEntry]:
        ordered = sorted(entries, key=lambda e: (e.created_at, e.id), reverse=True)
        if cursor is None:
            return ordered
        at, row_id = decode_cursor(cursor)
        return [e for e in ordered if (e.created_at, e.id) < (at, row_id)]

    for size in (1, 2, 3, 11, 50):
        walked: list[AuditEntry] = []
        cursor: str | None = None
        while True:
            from_cell = after(cell, cursor)  # as the cell answers: `size` entries and whether there are more
            page = merge([from_cell[:size], after(router, cursor)[:size + 1]], size, more=len(from_cell) > size)
            walked += page.data
            cursor = page.next_cursor
            if cursor is None:
                break
        assert [e.id for e in walked] == [e.id for e in everything], size
