"""A project's move states in this cell and the transitions the router's move driver asks for.

Each transition is idempotent (the driver repeats a step after any crash) and
refuses, with 409, a state it cannot come from. Those that must not overtake a
write take the project row FOR UPDATE: the guard holds it FOR KEY SHARE in every
writing transaction, so the transition commits only after every write already
admitted has committed, and no later write can miss the new state.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from cell import audit
from cell.auth import OWNER, PLACEMENT_TTL, Principal
from cell.moves import queries
from cell.moves.schema import Plan, ensure_guards, read_plan
from cell.moves.types import ActivateIn, PurgeIn, Receipt, ReleaseIn
from cell.projects import erasure
from cell.residency import receipts
from cell.settings import CellSettings
from cell.storage import ObjectStore
from common.problems import Problem

FENCE_GRACE = PLACEMENT_TTL + 1.0
"""Between `fencing` (the API refuses writes) and `fenced` (the database does): every API process has seen the
new state by then, so a write admitted just before it is the only kind still in flight, and the barrier waits
for it."""
BARRIER_TIMEOUT = "10s"


async def barrier(conn: asyncpg.Connection, project_id: uuid.UUID) -> str | None:
    """Lock the project row against every writer of the project (waiting for those in flight); its state."""
    await conn.execute(f"SET LOCAL lock_timeout = '{BARRIER_TIMEOUT}'")
    try:
        state: str | None = await conn.fetchval("SELECT state FROM projects WHERE id = $1 FOR UPDATE", project_id)
    except asyncpg.LockNotAvailableError:
        raise Problem(503, "writes in flight did not finish in time; retry", retry_after=1) from None
    return state


def _refuse(state: str | None, wanted: str) -> Problem:
    return Problem(409, f"the project is {state or 'absent'} in this region; cannot {wanted}")


async def begin(pool: asyncpg.Pool, project_id: uuid.UUID) -> Plan:
    """Source: start logging every change of the project (active → copying), guards attached first."""
    async with pool.acquire() as conn:
        plan = await ensure_guards(conn, await read_plan(conn))
        async with conn.transaction():
            state = await barrier(conn, project_id)
            if state == "active":
                await conn.execute("DELETE FROM move_changes WHERE project_id = $1", project_id)
                await conn.execute("UPDATE projects SET state = 'copying' WHERE id = $1", project_id)
            elif state not in queries.MOVING:
                raise _refuse(state, "copy it out")
    return plan


async def fence(pool: asyncpg.Pool, project_id: uuid.UUID, epoch: int) -> None:
    """Source: refuse writes, first in the API (fencing), then, once none can be in flight, in the database."""
    row = await queries.state_of(pool, project_id)
    state = row["state"] if row else None
    if state == "copying":
        await pool.execute("UPDATE projects SET state = 'fencing', epoch = greatest(epoch, $2)"
                           " WHERE id = $1 AND state = 'copying'", project_id, epoch)
        state = "fencing"
    if state == "fencing":
        await asyncio.sleep(FENCE_GRACE)
        async with pool.acquire() as conn, conn.transaction():
            state = await barrier(conn, project_id)
            if state not in ("fencing", "fenced"):
                raise _refuse(state, "fence it")
            await conn.execute("UPDATE projects SET state = 'fenced', epoch = greatest(epoch, $2) WHERE id = $1",
                               project_id, epoch)
    elif state == "fenced":
        await pool.execute("UPDATE projects SET epoch = greatest(epoch, $2) WHERE id = $1", project_id, epoch)
    else:
        raise _refuse(state, "fence it")


async def unfence(pool: asyncpg.Pool, project_id: uuid.UUID) -> None:
    """Source, when a move is abandoned before its flip: serve the project again as if nothing happened."""
    async with pool.acquire() as conn, conn.transaction():
        state = await barrier(conn, project_id)
        if state in queries.MOVING:
            await conn.execute("UPDATE projects SET state = 'active' WHERE id = $1", project_id)
            await conn.execute("DELETE FROM move_changes WHERE project_id = $1", project_id)
        elif state != "active":
            raise _refuse(state, "unfence it")


async def activate(pool: asyncpg.Pool, project_id: uuid.UUID, region: str, data: ActivateIn) -> None:
    """Target: serve the project from now on, with the source's unfinished jobs and the new epoch."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT state, epoch FROM projects WHERE id = $1 FOR UPDATE", project_id)
        if row is not None and row["state"] == "active" and row["epoch"] >= data.epoch:
            return  # activated already (a repeated step)
        if row is None or row["state"] != "importing":
            raise _refuse(row["state"] if row else None, "activate it")
        await queries.bypass(conn)
        await queries.add_jobs(conn, project_id, data.last_outbox_id, data.jobs)
        await conn.execute("UPDATE projects SET state = 'active', epoch = $2 WHERE id = $1", project_id, data.epoch)
        await conn.execute("DELETE FROM moved_projects WHERE project_id = $1", project_id)
        actor = (Principal(project_id, OWNER, False, "admin", str(data.requested_by), None) if data.requested_by
                 else Principal(project_id, OWNER, False, "system", "operator", None))
        move_id = str(data.move_id) if data.move_id else None
        await audit.record(conn, actor, "project.moved", "project", project_id, {
            "from_region": data.from_region, "to_region": region, "move_id": move_id, "epoch": data.epoch})


async def release(pool: asyncpg.Pool, project_id: uuid.UUID, data: ReleaseIn) -> None:
    """Source, after the flip: the project lives in `data.region` now; answer 421 with it from here on."""
    async with pool.acquire() as conn, conn.transaction():
        state = await conn.fetchval("SELECT state FROM projects WHERE id = $1 FOR UPDATE", project_id)
        if state is None:
            gone = await conn.fetchval("SELECT region FROM moved_projects WHERE project_id = $1", project_id)
            if gone != data.region:
                raise _refuse(state, "release it")
            return
        if state not in ("fenced", "moved"):
            raise _refuse(state, "release it")
        await conn.execute("UPDATE projects SET state = 'moved', epoch = greatest(epoch, $2) WHERE id = $1",
                           project_id, data.epoch)
        await conn.execute(
            """INSERT INTO moved_projects (project_id, region, epoch) VALUES ($1, $2, $3)
               ON CONFLICT (project_id) DO UPDATE SET region = EXCLUDED.region, epoch = EXCLUDED.epoch,
                                                      moved_at = now()""", project_id, data.region, data.epoch)


async def discard(pool: asyncpg.Pool, store: ObjectStore, project_id: uuid.UUID) -> None:
    """Target: remove a copy that is not served (a fresh move's leftovers, or an abandoned move's copy)."""
    row = await queries.state_of(pool, project_id)
    if row is not None and row["state"] != "importing":
        raise _refuse(row["state"], "discard it")
    async with pool.acquire() as conn:
        plan = await read_plan(conn)
    await queries.delete_objects(store, project_id)
    await queries.delete_project_rows(pool, plan, project_id)
    async with pool.acquire() as conn, conn.transaction():
        await queries.bypass(conn)
        await conn.execute("DELETE FROM projects WHERE id = $1 AND state = 'importing'", project_id)


async def purge(pool: asyncpg.Pool, store: ObjectStore, settings: CellSettings, project_id: uuid.UUID,
                data: PurgeIn) -> Receipt:
    """Source, after the flip: delete every row and object of the project; return the signed deletion receipt.

    The project eraser (cell/projects/erasure.py) does it: a residency report in this cell's hash chain (scope
    `project`), appended in the same transaction that deletes the project row, after checking that no table
    holds a row of the project and no object is left under its prefix. Repeated, it returns the receipt
    already written.
    """
    row = await queries.state_of(pool, project_id)
    if row is None:
        found = await erasure.receipt_for(pool, project_id, "move_id", str(data.move_id))
        if found is None:
            raise Problem(404, "no such project in this region, and no deletion receipt for this move")
        return _wire(found)
    if row["state"] != "moved":
        raise _refuse(row["state"], "purge it")
    sealed = await erasure.erase(pool, store, settings, project_id, {
        "moved_to": data.region, "epoch": data.epoch, "move_id": str(data.move_id)})
    assert sealed is not None  # no deadline: it finishes or raises
    return _wire(sealed)


def _wire(sealed: receipts.Receipt) -> Receipt:
    """A sealed report as a move's purge answers it."""
    return Receipt(seq=sealed.seq, created_at=sealed.created_at, body=sealed.body, prev_hash=sealed.prev_hash,
                   hash=sealed.hash, signature=sealed.signature, public_key=sealed.public_key)
