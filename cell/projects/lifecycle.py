"""A project's rename and deletion in its cell, for the router acting as itself (router/projects/lifecycle.py).

Deletion is asked for again and again by the router's outbox until it is done:
the first call fences the project (`deleting`: the API refuses every request
for it with 404, the database guard refuses writes), and every call erases for
at most `ERASE_BUDGET` seconds (cell/projects/erasure.py, resumable), answering
202 with `done: false` until the erasure seals its receipt, then 200 with it.
After that the same call answers the same receipt, found by the deletion's id.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, patch, post

from cell.context import ctx
from cell.moves import queries
from cell.moves.schema import ensure_guards, read_plan
from cell.moves.states import barrier
from cell.projects import erasure
from cell.projects.routes import require_router
from cell.residency import receipts
from common.problems import Problem

ERASE_BUDGET = 5.0
"""Seconds of erasing per call: each answer comes well within the router's timeout, and the next call resumes."""


class RenameIn(msgspec.Struct, kw_only=True):
    """`PATCH /internal/projects/{id}`: the name the router's directory now has."""

    name: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.name) <= 200:
            raise ValueError("name must be 1 to 200 characters - at `$.name`")


class Renamed(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str


class EraseIn(msgspec.Struct, kw_only=True):
    """`POST /internal/projects/{id}/erase`: which deletion, and the directory's epoch at its fence."""

    deletion_id: uuid.UUID
    epoch: int


class Erasure(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where an erasure stands: `done` with the signed receipt, or still going."""

    project_id: uuid.UUID
    done: bool
    receipt: receipts.Receipt | None = None


@patch("/internal/projects/{project_id:uuid}", status_code=200)
async def rename(request: Request[Any, Any, Any], project_id: uuid.UUID, data: RenameIn) -> Renamed:
    """Take the directory's name for the project (the same call again changes nothing)."""
    require_router(request)
    row = await ctx(request).pool.fetchrow(
        "UPDATE projects SET name = $2, updated_at = now() WHERE id = $1 RETURNING id, name", project_id, data.name)
    if row is None:
        raise Problem(404, "no such project in this region")
    return Renamed(id=row["id"], name=row["name"])


@post("/internal/projects/{project_id:uuid}/erase", status_code=200)
async def erase(request: Request[Any, Any, Any], project_id: uuid.UUID, data: EraseIn) -> Response[Erasure]:
    """Fence the project for its deletion (first call), erase for a while; 200 with the receipt once done."""
    require_router(request)
    c = ctx(request)
    row = await queries.state_of(c.pool, project_id)
    if row is None:
        found = await erasure.receipt_for(c.pool, project_id, "deletion_id", str(data.deletion_id))
        if found is None:
            raise Problem(404, "no such project in this region, and no receipt of this deletion")
        return Response(Erasure(project_id=project_id, done=True, receipt=found), status_code=200)
    if row["state"] == "active":
        await _fence(c.pool, project_id, data.epoch)
    elif row["state"] != "deleting":
        raise Problem(409, f"the project is {row['state']} in this region; it cannot be deleted now")
    sealed = await erasure.erase(
        c.pool, c.store, c.settings, project_id,
        {"reason": "project deleted", "deletion_id": str(data.deletion_id), "epoch": data.epoch},
        deadline=time.monotonic() + ERASE_BUDGET)
    if sealed is None:
        return Response(Erasure(project_id=project_id, done=False), status_code=202)
    return Response(Erasure(project_id=project_id, done=True, receipt=sealed), status_code=200)


async def _fence(pool: asyncpg.Pool, project_id: uuid.UUID, epoch: int) -> None:
    """active → deleting: the guard is attached to every table first, then the state changes once the writes
    in flight have committed (the move's barrier), so no write is admitted after it."""
    async with pool.acquire() as conn:
        await ensure_guards(conn, await read_plan(conn))
        async with conn.transaction():
            state = await barrier(conn, project_id)
            if state == "active":
                await conn.execute(
                    "UPDATE projects SET state = 'deleting', epoch = greatest(epoch, $2) WHERE id = $1",
                    project_id, epoch)
            elif state != "deleting":
                raise Problem(409, f"the project is {state or 'absent'} in this region; it cannot be deleted now")


ROUTES = [rename, erase]
