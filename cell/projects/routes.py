"""A project as its cell holds it: the router's provisioning endpoint (create or confirm a project here),
and the project's settings — what its admins decide about how the cell treats its data, such as how
long it is kept (`retention_days`, applied by the daily retention job in cell.maintenance.retention) and which
web origins may call ingest (`allowed_origins`, checked in cell.auth)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get, patch, post, put

from cell import audit
from cell.auth import ADMIN, READ, require
from cell.context import caller, ctx
from cell.maintenance.retention import MAX_DAYS, retention_days
from cell.privacy import queries as privacy
from cell.projects import secret as project_secret
from cell.users import identity
from common.origins import web_origin
from common.problems import FieldError, Problem
from common.signing import Actor

IdentityMode = Literal["optional", "required"]


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
    """`GET …/settings`: a project's settings; `retention_days` null keeps data forever;
    `strip_image_metadata` false keeps images' EXIF/XMP/IPTC as uploaded (cell/media/metadata.py);
    `allowed_origins` empty lets pages on every origin call ingest, else only those origins
    (`cell.auth.Authenticator.check_origin`)."""

    retention_days: int | None
    identity_verification: IdentityMode = "optional"
    """`required`: a `user` without a valid `user_hash` is refused (401); `optional`: it is kept unverified."""
    strip_image_metadata: bool = True
    allowed_origins: list[str] = msgspec.field(default_factory=list)


Origins = Annotated[list[Annotated[str, msgspec.Meta(max_length=300)]], msgspec.Meta(max_length=100)]


class SettingsPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PATCH …/settings`: absent fields are left alone; `retention_days: null` keeps data forever."""

    retention_days: Annotated[int, msgspec.Meta(ge=1, le=MAX_DAYS)] | msgspec.UnsetType | None = msgspec.UNSET
    identity_verification: IdentityMode | msgspec.UnsetType = msgspec.UNSET
    strip_image_metadata: bool | msgspec.UnsetType = msgspec.UNSET
    allowed_origins: Origins | msgspec.UnsetType = msgspec.UNSET


def _settings(stored: dict[str, Any]) -> ProjectSettings:
    """The settings a stored `projects.settings` document gives (anything unusable reads as unset)."""
    mode = stored.get("identity_verification")
    return ProjectSettings(retention_days=retention_days(stored.get("retention_days")),
                           identity_verification="required" if mode == "required" else "optional",
                           strip_image_metadata=stored.get("strip_image_metadata") is not False,
                           allowed_origins=allowed_origins(stored))


def allowed_origins(stored: dict[str, Any]) -> list[str]:
    """The origins a stored settings document allows (empty: every origin)."""
    found = stored.get("allowed_origins")
    return [o for o in found if isinstance(o, str)] if isinstance(found, list) else []


def _origins(given: list[str]) -> list[str]:
    """The origins as browsers send them, or a 422 naming each one that is not an origin."""
    errors = [FieldError(f"/allowed_origins/{i}", "not an origin like https://app.example.com")
              for i, o in enumerate(given) if web_origin(o) is None]
    if errors:
        raise Problem(422, "allowed_origins holds origins, scheme://host[:port], nothing more", errors=errors)
    return list(dict.fromkeys(o for o in (web_origin(g) for g in given) if o))


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
    changes = {f: v for f in data.__struct_fields__ if not isinstance(v := getattr(data, f), msgspec.UnsetType)}
    if not changes:
        raise Problem(422, "nothing to change: send retention_days (whole days, or null to keep data forever),"
                           " identity_verification (optional or required), strip_image_metadata or allowed_origins")
    if "allowed_origins" in changes:
        changes["allowed_origins"] = _origins(changes["allowed_origins"])
    # null removes a setting (back to its default); any other value replaces it.
    removed = [f for f, v in changes.items() if v is None]
    kept = {f: v for f, v in changes.items() if v is not None}
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        stored = await conn.fetchval(
            """UPDATE projects SET settings = (settings - $2::text[]) || $3::jsonb, updated_at = now()
                WHERE id = $1 RETURNING settings""", project_id, removed, kept)
        if stored is None:
            raise Problem(404, "no such project")
        await audit.record(conn, principal, "project.settings_updated", "project", project_id, changes)
    if "allowed_origins" in changes:  # this process at once; the others within their placement TTL
        await ctx(request).auth.placement(project_id, fresh=True)
    return _settings(stored)


class IdentitySecret(msgspec.Struct):
    """`POST …/identity-secret`: the project's new identity secret, shown this once."""

    secret: str


@post("/v1/projects/{project_id:uuid}/identity-secret", status_code=201)
async def rotate_identity_secret(request: Request[Any, Any, Any], project_id: uuid.UUID) -> IdentitySecret:
    """Create the project's identity secret, or replace it (the old one stops verifying at once); admins.

    The customer's server signs each end user's external id with it (`user_hash`); only its sealed form
    is stored, so it is shown once."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        secret = await identity.rotate(conn, ctx(request).settings.secret_key, project_id)
        if secret is None:
            raise Problem(404, "no such project")
        await audit.record(conn, principal, "project.identity_secret_rotated", "project", project_id, {})
    return IdentitySecret(secret)


ROUTES = [provision, get_settings, update_settings, rotate_identity_secret]
