"""A project as its cell holds it: the router's provisioning endpoint (create or confirm a project here),
and the project's settings — what its admins decide about how the cell treats its data, such as how
long it is kept (`retention_days`, applied by the daily retention job in cell.maintenance.retention)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get, patch, put

from cell import audit
from cell.auth import ADMIN, READ, require
from cell.context import caller, ctx
from cell.maintenance.retention import MAX_DAYS, retention_days
from cell.privacy import queries as privacy
from cell.projects import secret as project_secret
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
            """INSERT INTO projects (id, name, region, sealed_secret, created_at)
               VALUES ($1, $2, $3, $4, coalesce($5, now()))
               ON CONFLICT (id) DO UPDATE SET updated_at = projects.updated_at
               RETURNING id, name, region::text, created_at, (xmax = 0) AS created""",
            project_id, data.name, data.region, project_secret.new_sealed(settings.secret_key, project_id),
            data.created_at,
        )
        assert row is not None
        if row["created"]:  # a retried call finds the row and leaves its rules alone
            await privacy.insert_defaults(conn, project_id)
    return msgspec.convert(dict(row), ProjectOut)


class ProjectSettings(msgspec.Struct, kw_only=True):
    """`GET …/settings`: a project's settings; `retention_days` null keeps data forever."""

    retention_days: int | None


class SettingsPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PATCH …/settings`: absent fields are left alone; `retention_days: null` keeps data forever."""

    retention_days: Annotated[int, msgspec.Meta(ge=1, le=MAX_DAYS)] | msgspec.UnsetType | None = msgspec.UNSET


def _settings(stored: dict[str, Any]) -> ProjectSettings:
    """The settings a stored `projects.settings` document gives (anything unusable reads as unset)."""
    return ProjectSettings(retention_days=retention_days(stored.get("retention_days")))


@get("/v1/projects/{project_id:uuid}/settings")
async def get_settings(request: Request[Any, Any, Any], project_id: uuid.UUID) -> ProjectSettings:
    """The project's settings."""
    require(await caller(request, project_id), project_id, level=READ)
    stored = await ctx(request).pool.fetchval("SELECT settings FROM projects WHERE id = $1", project_id)
    if stored is None:
        raise Problem(404, "no such project")
    return _settings(stored)


@patch("/v1/projects/{project_id:uuid}/settings")
async def update_settings(request: Request[Any, Any, Any], project_id: uuid.UUID,
                          data: SettingsPatch) -> ProjectSettings:
    """Change the project's settings (admins); audited with the new values in the same transaction."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    if isinstance(data.retention_days, msgspec.UnsetType):
        raise Problem(422, "nothing to change: send retention_days (whole days, or null to keep data forever)")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        stored = await conn.fetchval(
            """UPDATE projects SET settings = CASE WHEN $2::int IS NULL THEN settings - 'retention_days'
                                               ELSE settings || jsonb_build_object('retention_days', $2::int) END,
                                   updated_at = now()
                WHERE id = $1 RETURNING settings""", project_id, data.retention_days)
        if stored is None:
            raise Problem(404, "no such project")
        await audit.record(conn, principal, "project.settings_updated", "project", project_id,
                           {"retention_days": data.retention_days})
    return _settings(stored)


ROUTES = [provision, get_settings, update_settings]
