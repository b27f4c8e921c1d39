"""A project export withdrawn by an end user's erasure (cell/exports/queries.withdraw) while its worker builds it:
the worker's finish finds it withdrawn and deletes the archive it just stored, so no copy of the person's data
outlives the erasure. Against a real Postgres and object directory."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from cell.exports import archive, jobs, queries
from cell.maintenance import retention
from cell.storage import ObjectStore, project_key
from common.ids import uuid7
from common.pg import create_pool
from tests.services import StorePostgres, offline_cell_settings


@pytest.fixture(scope="module")
def dsn(pg: StorePostgres) -> str:
    return pg.migrated("export_withdrawal_unit", "cell")


async def test_an_export_withdrawn_while_it_is_built_keeps_no_archive(dsn: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = offline_cell_settings(dsn, tmp_path)
    store = ObjectStore(settings.object_store)
    pool = await create_pool(dsn, 4)
    try:
        pid = uuid7()
        await pool.execute("INSERT INTO projects (id, name, region, secret) VALUES ($1, 'p', 'eu-west', $2)",
                           pid, secrets.token_bytes(32))
        await store.put(project_key(pid, "media", "shot"), b"the person's screenshot")
        withdrawn_id, kept_id, pending_id = uuid7(), uuid7(), uuid7()
        async with pool.acquire() as conn:
            for export_id in (withdrawn_id, kept_id, pending_id):
                await queries.insert(conn, export_id, pid, "someone")
        real_build = archive.build
        erase_during: set[uuid.UUID] = {withdrawn_id}

        async def build_then_erased(*args: Any) -> archive.Built:
            built = await real_build(*args)
            if args[-1] in erase_during:  # an end user's erasure commits while the archive is being stored
                async with pool.acquire() as conn:
                    assert set(await queries.withdraw(conn, pid)) == {withdrawn_id, kept_id, pending_id}
            return built

        monkeypatch.setattr(archive, "build", build_then_erased)  # jobs calls it as archive.build
        ctx = {"settings": settings, "pool": pool, "store": store}
        await jobs.build_export(ctx, {"export_id": str(withdrawn_id)})
        row = await queries.get(pool, pid, withdrawn_id)
        assert row is not None and row["status"] == "failed" and row["failure_reason"] == queries.WITHDRAWN
        assert row["storage_key"] is None and await store.keys(queries.prefix(pid, withdrawn_id)) == []
        # The others were withdrawn before their worker came: nothing is built for them.
        for other in (kept_id, pending_id):
            await jobs.build_export(ctx, {"export_id": str(other)})
            assert await store.keys(queries.prefix(pid, other)) == []
            found = await queries.get(pool, pid, other)
            assert found is not None and found["status"] == "failed"
        # An export asked for after the erasure is built and kept as usual.
        fresh = uuid7()
        async with pool.acquire() as conn:
            await queries.insert(conn, fresh, pid, "someone")
        await jobs.build_export(ctx, {"export_id": str(fresh)})
        done = await queries.get(pool, pid, fresh)
        assert done is not None and done["status"] == "ready"
        assert sorted(k for k, _ in await store.keys(queries.prefix(pid, fresh))) == sorted(
            [done["storage_key"], done["manifest_storage_key"]])
    finally:
        await pool.close()


async def test_a_retention_run_that_deletes_withdraws_the_exports_that_may_hold_it(dsn: str, tmp_path: Path) -> None:
    """An export built before data passed the project's retention limit holds that data: the run that deletes it
    withdraws the export and deletes its archive; a run that deletes nothing leaves a fresh export alone."""
    settings = offline_cell_settings(dsn, tmp_path)
    store = ObjectStore(settings.object_store)
    pool = await create_pool(dsn, 4)
    try:
        pid = uuid7()
        await pool.execute("""INSERT INTO projects (id, name, region, secret, settings)
                              VALUES ($1, 'p', 'eu-west', $2, '{"retention_days": 1}')""",
                           pid, secrets.token_bytes(32))
        await pool.execute("""INSERT INTO interactions (id, project_id, type, source, content_text, created_at)
                              VALUES ($1, $2, 'bug', 'sdk', 'an old report', now() - interval '3 days')""",
                           uuid7(), pid)
        ctx = {"settings": settings, "pool": pool, "store": store}
        old = uuid7()
        async with pool.acquire() as conn:
            await queries.insert(conn, old, pid, "someone")
        await jobs.build_export(ctx, {"export_id": str(old)})
        assert await store.keys(queries.prefix(pid, old))  # the archive holds the old report

        totals = await retention.purge(pool, store, pid)
        assert totals is not None and totals["interactions"] == 1 and totals["exports_withdrawn"] == 1
        row = await queries.get(pool, pid, old)
        assert row is not None and row["status"] == "failed" and row["failure_reason"] == queries.EXPIRED
        assert await store.keys(queries.prefix(pid, old)) == []

        fresh = uuid7()
        async with pool.acquire() as conn:
            await queries.insert(conn, fresh, pid, "someone")
        await jobs.build_export(ctx, {"export_id": str(fresh)})
        totals = await retention.purge(pool, store, pid)  # nothing older than the limit is left
        assert totals is not None and "exports_withdrawn" not in totals
        kept = await queries.get(pool, pid, fresh)
        assert kept is not None and kept["status"] == "ready"
    finally:
        await pool.close()
