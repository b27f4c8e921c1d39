"""End-user endpoints: list and get for project members; erasure and export for admins."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, delete, get
from litestar.params import Parameter
from litestar.response import Stream

from cell import audit
from cell.auth import ADMIN, READ, require
from cell.context import caller, ctx
from cell.interactions.queries import Filters
from cell.paging import Page, decode_cursor, limit_of, newest_first
from cell.users import erasure, export
from common.problems import Problem

COLUMNS = "id, external_user_id AS external_id, email, name, avatar_url, traits, verified, created_at, updated_at"


class EndUser(msgspec.Struct, kw_only=True):
    """An end user as the API returns it; `external_id` is the customer's own id for them."""

    id: uuid.UUID
    external_id: str
    email: str | None
    name: str | None
    avatar_url: str | None
    traits: dict[str, Any]
    verified: bool
    """A request proved this identity with a valid `user_hash`; only such requests change it."""
    created_at: datetime
    updated_at: datetime


class EndUserDetail(EndUser, kw_only=True):
    """One end user with how much is held about them."""

    session_count: int
    interaction_count: int
    conversation_count: int
    vote_count: int


def like_prefix(text: str) -> str:
    """A LIKE pattern matching strings that start with `text` literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@get("/v1/projects/{project_id:uuid}/end-users")
async def list_end_users(
    request: Request[Any, Any, Any],
    project_id: uuid.UUID,
    q: str | None = Parameter(default=None, min_length=1, max_length=255),
    cursor: str | None = None,
    limit: int | None = None,
) -> Page[EndUser]:
    """End users newest first; `q` matches the start of their external id or email (email ignoring case)."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    f = Filters(project_id)
    if q is not None:
        f.add("(external_user_id LIKE {0} OR lower(email) LIKE lower({0}))", like_prefix(q))
    f.after(decode_cursor(cursor) if cursor else None)
    n = f.param(size + 1)
    rows = await ctx(request).pool.fetch(
        f"SELECT {COLUMNS} FROM end_users WHERE {f.where()} ORDER BY created_at DESC, id DESC LIMIT {n}", *f.params)
    return newest_first([msgspec.convert(dict(r), EndUser) for r in rows], size)


@get("/v1/projects/{project_id:uuid}/end-users/{user_id:uuid}")
async def get_end_user(request: Request[Any, Any, Any], project_id: uuid.UUID, user_id: uuid.UUID) -> EndUserDetail:
    """One end user, with counts of what erasure would remove."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await ctx(request).pool.fetchrow(
        f"""WITH s AS (SELECT id FROM sessions WHERE project_id = $1 AND user_id = $2)
            SELECT {COLUMNS},
                   (SELECT count(*) FROM s) AS session_count,
                   (SELECT count(*) FROM interactions i WHERE i.project_id = $1
                       AND (i.user_id = $2 OR i.session_id IN (SELECT id FROM s))) AS interaction_count,
                   (SELECT count(*) FROM conversations c WHERE c.project_id = $1
                       AND (c.user_id = $2 OR c.session_id IN (SELECT id FROM s))) AS conversation_count,
                   (SELECT count(*) FROM feedback_votes v WHERE v.project_id = $1
                       AND (v.user_id = $2 OR v.session_id IN (SELECT id FROM s))) AS vote_count
              FROM end_users WHERE project_id = $1 AND id = $2""", project_id, user_id)
    if row is None:
        raise Problem(404, "no such end user")
    return msgspec.convert(dict(row), EndUserDetail)


@delete("/v1/projects/{project_id:uuid}/end-users/{user_id:uuid}", status_code=204)
async def erase_end_user(request: Request[Any, Any, Any], project_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Erase the person and everything of theirs, object bytes included; audited with counts only."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        done = await erasure.erase(conn, context.store, principal, project_id, user_id)
    if done is None:
        raise Problem(404, "no such end user")
    await erasure.finish(context.pool, context.store, *done)


@get("/v1/projects/{project_id:uuid}/end-users/{user_id:uuid}/export", media_type="application/zip")
async def export_end_user(request: Request[Any, Any, Any], project_id: uuid.UUID, user_id: uuid.UUID) -> Stream:
    """Everything held about the person as a zip: `person.json` and their media under `media/`."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    context = ctx(request)
    archive = await export.build(context.pool, context.store, project_id, user_id)
    if archive is None:
        raise Problem(404, "no such end user")
    try:
        async with context.pool.acquire() as conn, conn.transaction():
            await audit.record(conn, principal, "end_user.exported", "end_user", user_id, archive.counts)
    except BaseException:
        archive.file.close()
        raise
    return Stream(archive.chunks(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="end-user-{user_id}.zip"',
        "Content-Length": str(archive.size),
        "Cache-Control": "no-store",
    })


ROUTES = [list_end_users, get_end_user, erase_end_user, export_end_user]
