"""Erasing a whole project from this cell: every row and every object, checked, then a signed deletion receipt.

One eraser serves both ways a project leaves a cell: a move's purge of its
source (cell/moves/states.py) and the owner's deletion of the project
(cell/projects/lifecycle.py, driven by router/projects/lifecycle.py). It works
from the move's catalogue-driven plan (every table with a `project_id` column,
children first, so tables added later are erased without anyone listing them),
deletes rows in the move's bounded batches and objects with the end-user
erasure's guarded `delete_objects` (only keys under `projects/`).

Everything commits as it goes, so an erasure cut short anywhere (a crash, the
store down, the caller's time budget spent) resumes where it stopped when it is
called again. What was there when it began is kept on the project row itself
(`projects.erasure`: counts only), so the receipt of a resumed erasure still
counts it all; that bookkeeping goes with the row, in the transaction that
checks that no table holds a row of the project and seals the receipt.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from cell.moves import queries
from cell.moves.schema import Plan, read_plan
from cell.residency import receipts
from cell.settings import CellSettings
from cell.storage import ObjectStore
from cell.users.erasure import delete_objects
from common.problems import Problem

OBJECT_BATCH = 100
"""Objects deleted between two looks at the deadline."""


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


async def _begin(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID, plan: Plan) -> None:
    """Count what the project holds, once: the receipt says what the erasure found when it began."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT erasure FROM projects WHERE id = $1 FOR UPDATE", project_id)
        if row is None or row["erasure"] is not None:
            return
        before = await queries.remaining_rows(conn, plan, project_id)
        objects = await store.keys(queries.prefix(project_id))
        await conn.execute("UPDATE projects SET erasure = $2 WHERE id = $1", project_id, {
            "rows": {name: n for name, n in sorted(before.items()) if n},
            "objects": len(objects), "bytes": sum(size for _, size in objects)})


async def _erase_objects(store: ObjectStore, project_id: uuid.UUID, deadline: float | None) -> bool:
    """Delete every object under the project's prefix, a batch at a time; False if time ran out."""
    found = await store.keys(queries.prefix(project_id))
    for start in range(0, len(found), OBJECT_BATCH):
        if _expired(deadline):
            return False
        await delete_objects(store, [key for key, _ in found[start:start + OBJECT_BATCH]])
    return True


async def erase(pool: asyncpg.Pool, store: ObjectStore, settings: CellSettings, project_id: uuid.UUID,
                body: dict[str, Any], *, deadline: float | None = None) -> receipts.Receipt | None:
    """Erase the project here and seal its deletion receipt; None when `deadline` (monotonic) came first.

    `body` says why (a move's or a deletion's ids); the receipt adds what was deleted and what remains
    (nothing: it is sealed only once every table and the object prefix hold nothing of the project, in the
    transaction that removes the project row). The caller has made sure no new write can be admitted.
    """
    async with pool.acquire() as conn:
        plan = await read_plan(conn)
        await _begin(conn, store, project_id, plan)
    if not await _erase_objects(store, project_id, deadline):
        return None
    for table in plan.tenant_tables:
        while await queries.delete_batch(pool, table, project_id) == queries.DELETE_BATCH:
            if _expired(deadline):
                return None
        if _expired(deadline):
            return None
    # Objects a job stored while the rows went (its row refused, or deleted above).
    if not await _erase_objects(store, project_id, None):
        return None
    if await store.keys(queries.prefix(project_id)):
        raise Problem(503, "objects of the project are still being written; retry", retry_after=2)
    async with pool.acquire() as conn, conn.transaction():
        await queries.bypass(conn)
        erasure = await conn.fetchval("DELETE FROM projects WHERE id = $1 RETURNING erasure", project_id)
        left = await queries.remaining_rows(conn, plan, project_id)
        if any(left.values()):
            raise Problem(503, "rows of the project are still being written; retry", retry_after=2)
        counted = erasure or {"rows": {}, "objects": 0, "bytes": 0}
        sealed: dict[str, Any] = {
            "kind": "deletion", "version": 1, "project_id": str(project_id), "region": settings.region, **body,
            "created_at": datetime.now(UTC).isoformat(),
            "deleted": {"rows": counted["rows"], "objects": int(counted["objects"]),
                        "bytes": int(counted["bytes"])},
            "remaining": {"rows": 0, "objects": 0, "tables_checked": sorted(left)},
        }
        return await receipts.append(conn, receipts.signing_key(settings.secret_key, settings.region), sealed,
                                     scope="project", audited_project=project_id)


async def receipt_for(pool: asyncpg.Pool, project_id: uuid.UUID, field: str, value: str) -> receipts.Receipt | None:
    """The deletion receipt already sealed for the project whose body has `field` = `value` (the move's or the
    deletion's id): what a repeated call, after the project row is gone, answers with."""
    row = await pool.fetchrow(
        f"""SELECT {receipts.COLUMNS} FROM residency_reports
             WHERE audited_project = $1 AND body->>'kind' = 'deletion' AND body->>$2 = $3
             ORDER BY seq DESC LIMIT 1""", project_id, field, value)
    return None if row is None else receipts.from_row(row)
