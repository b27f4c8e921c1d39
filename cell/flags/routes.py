"""Feature flags: management (writes need `write`, audited) and evaluation for SDKs."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec
from litestar import Request, delete, get, patch, post

from cell import audit
from cell.auth import READ, WRITE, require
from cell.context import caller, ctx
from cell.flags import queries
from cell.flags.types import FeatureFlag, FlagIn, FlagPatch, Flags
from cell.paging import Page, decode_cursor, limit_of, newest_first
from common.problems import Problem


def _out(row: Any) -> FeatureFlag:
    return msgspec.convert(dict(row), FeatureFlag)


@get("/v1/projects/{project_id:uuid}/feature-flags")
async def list_flags(request: Request[Any, Any, Any], project_id: uuid.UUID, enabled: bool | None = None,
                     cursor: str | None = None, limit: int | None = None) -> Page[FeatureFlag]:
    """The project's flags, newest first."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    rows = await queries.page(ctx(request).pool, project_id, enabled, decode_cursor(cursor) if cursor else None, size)
    return newest_first([_out(r) for r in rows], size)


@get("/v1/projects/{project_id:uuid}/feature-flags/{flag_id:uuid}")
async def get_flag(request: Request[Any, Any, Any], project_id: uuid.UUID, flag_id: uuid.UUID) -> FeatureFlag:
    """One flag."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get(ctx(request).pool, project_id, flag_id)
    if row is None:
        raise Problem(404, "no such feature flag")
    return _out(row)


@post("/v1/projects/{project_id:uuid}/feature-flags", status_code=201)
async def create_flag(request: Request[Any, Any, Any], project_id: uuid.UUID, data: FlagIn) -> FeatureFlag:
    """Add a flag (off unless `enabled`); a name already used in the project is a 409."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.insert(conn, project_id, data.flag, data.enabled)
        if row is None:
            raise Problem(409, f"the project already has a flag named {data.flag!r}")
        await audit.record(conn, principal, "feature_flag.created", "feature_flag", row["id"],
                           {"flag": data.flag, "enabled": data.enabled})
    return _out(row)


@patch("/v1/projects/{project_id:uuid}/feature-flags/{flag_id:uuid}")
async def update_flag(request: Request[Any, Any, Any], project_id: uuid.UUID, flag_id: uuid.UUID,
                      data: FlagPatch) -> FeatureFlag:
    """Turn a flag on or off, or rename it."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    if not changes:
        raise Problem(422, "nothing to change: send flag or enabled")
    try:
        async with ctx(request).pool.acquire() as conn, conn.transaction():
            row = await queries.update(conn, project_id, flag_id, changes)
            if row is None:
                raise Problem(404, "no such feature flag")
            await audit.record(conn, principal, "feature_flag.updated", "feature_flag", flag_id,
                               {"fields": sorted(changes), "flag": row["flag"], "enabled": row["enabled"]})
    except asyncpg.UniqueViolationError as exc:
        raise Problem(409, "the project already has a flag of that name") from exc
    return _out(row)


@delete("/v1/projects/{project_id:uuid}/feature-flags/{flag_id:uuid}", status_code=204)
async def delete_flag(request: Request[Any, Any, Any], project_id: uuid.UUID, flag_id: uuid.UUID) -> None:
    """Remove a flag; SDKs stop seeing it."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.delete(conn, project_id, flag_id)
        if row is None:
            raise Problem(404, "no such feature flag")
        await audit.record(conn, principal, "feature_flag.deleted", "feature_flag", flag_id, {"flag": row["flag"]})


@get("/v1/ingest/flags")
async def ingest_flags(request: Request[Any, Any, Any]) -> Flags:
    """Every flag of the key's project and whether it is on."""
    principal = require(await caller(request), ingest=True)
    return Flags(await queries.flags_of(ctx(request).pool, principal.project_id))


ROUTES = [list_flags, get_flag, create_flag, update_flag, delete_flag, ingest_flags]
