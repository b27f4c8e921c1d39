"""The router's provisioning endpoint: create (or confirm) a project in this cell."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, put

from cell.context import ctx
from cell.privacy import queries as privacy
from common.problems import Problem
from common.signing import Actor


class ProjectIn(msgspec.Struct):
    """What the router knows of a new project."""

    name: str
    region: str
    created_at: datetime | None = None


class ProjectOut(msgspec.Struct):
    """The project as this cell holds it."""

    id: uuid.UUID
    name: str
    region: str
    created_at: datetime


def require_router(request: Request[Any, Any, Any]) -> Actor:
    """Internal endpoints are for the router acting as itself."""
    actor: Actor | None = request.scope.get("state", {}).get("actor")
    if actor is None or actor.kind != "router":
        raise Problem(403, "internal endpoint")
    return actor


@put("/internal/projects/{project_id:uuid}", status_code=200)
async def provision(request: Request[Any, Any, Any], project_id: uuid.UUID, data: ProjectIn) -> ProjectOut:
    """Create the project here if absent; the same call again changes nothing (outbox retries)."""
    require_router(request)
    settings = ctx(request).settings
    if data.region != settings.region:
        raise Problem(421, "this project belongs to another region", region=data.region)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO projects (id, name, region, secret, created_at)
               VALUES ($1, $2, $3, $4, coalesce($5, now()))
               ON CONFLICT (id) DO UPDATE SET updated_at = projects.updated_at
               RETURNING id, name, region::text, created_at, (xmax = 0) AS created""",
            project_id, data.name, data.region, secrets.token_bytes(32), data.created_at,
        )
        assert row is not None
        if row["created"]:  # a retried call finds the row and leaves its rules alone
            await privacy.insert_defaults(conn, project_id)
    return msgspec.convert(dict(row), ProjectOut)


ROUTES = [provision]
