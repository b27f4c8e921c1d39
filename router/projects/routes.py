"""`/v1/projects`: create a project in a region, list and read them, manage keys (members: router.members).

These are the router's own endpoints; everything else under a project is
proxied to the project's cell by `router.proxy`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import asyncpg
import httpx
import msgspec
from litestar import Request, Response, delete, get, post

from common.access import READ
from common.access import ROLE_LEVEL as ROLE_LEVEL
from common.ids import uuid7
from common.keys import digest, new_key_prefix, presented
from common.problems import FieldError, Problem
from common.signing import Actor
from router import access, audit
from router.auth.routes import current_session
from router.auth.sessions import Session
from router.directory import KEY_COLUMNS, Change, KeyEntry, ProjectEntry, publish
from router.moves import routing
from router.projects import provisioning
from router.state import RouterState, state

Role = Literal["owner", "admin", "agent", "viewer"]


class ProjectIn(msgspec.Struct):
    """`POST /v1/projects`."""

    name: str
    region: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.name.strip()) <= 200:
            raise ValueError("name must be 1 to 200 characters - at `$.name`")


class Project(msgspec.Struct):
    """A project and where it lives."""

    id: uuid.UUID
    name: str
    region: str
    created_at: datetime
    role: str | None = None
    state: str = "active"
    """`active`, or where it stands: `provisioning`, moving (`copying`, `fenced`, `flipped`), `deleting`."""


class ProjectList(msgspec.Struct):
    data: list[Project]
    next_cursor: str | None = None


class KeyIn(msgspec.Struct, kw_only=True):
    """`POST /v1/projects/{id}/api-keys`."""

    name: str
    scopes: list[Literal["ingest", "read", "write", "admin"]]
    expires_at: datetime | None = None


_PROJECT = "SELECT id, name, region, created_at, state::text AS state FROM project_directory"


@post("/v1/projects", status_code=201)
async def create_project(request: Request[Any, Any, Any], data: ProjectIn) -> Project:
    """Record the project, make the caller its owner, and provision it in its region's cell."""
    session = await current_session(request)
    st = state(request)
    if data.region not in st.settings.cells:
        raise Problem(422, "unknown region", errors=[
            FieldError("/region", f"one of {', '.join(sorted(st.settings.cells))}")])
    project_id = uuid7()
    async with st.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO project_directory (id, name, region, created_by) VALUES ($1, $2, $3, $4)
               RETURNING id, name, region, created_at""", project_id, data.name.strip(), data.region, session.user_id)
        assert row is not None
        await conn.execute(
            "INSERT INTO project_memberships (id, user_id, project_id, role) VALUES ($1, $2, $3, 'owner')",
            uuid7(), session.user_id, project_id)
        outbox_id = await provisioning.add(conn, project_id, "project.provision", {})
        await audit.record(conn, action="project.created", actor_id=session.user_id, project_id=project_id,
                           target_type="project", target_id=project_id,
                           ip=access.client_ip(st, request.scope), metadata={"region": data.region})
    try:
        await provisioning.provision_project(st, project_id, row["name"], row["region"], row["created_at"])
    except Problem as problem:  # the outbox finishes it when the region is back
        raise Problem(503, f"project recorded; region {data.region} is unreachable, provisioning will finish"
                      " when it returns", retry_after=10, project_id=str(project_id)) from problem
    await provisioning.done(st, outbox_id)
    return Project(**dict(row), role="owner")


@get("/v1/projects")
async def list_projects(request: Request[Any, Any, Any]) -> ProjectList:
    """The caller's projects, with their region and the caller's role."""
    session = await current_session(request)
    rows = await state(request).pool.fetch(
        """SELECT p.id, p.name, p.region, p.created_at, m.role::text AS role, p.state::text AS state
             FROM project_directory p JOIN project_memberships m ON m.project_id = p.id
            WHERE m.user_id = $1 AND p.state NOT IN ('provisioning', 'purged', 'failed')
            ORDER BY p.created_at DESC""", session.user_id)
    return ProjectList([Project(**dict(r)) for r in rows])


@get("/v1/projects/{project_id:uuid}")
async def get_project(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Project:
    """One project the caller is a member of (a key with the read scope may read its own project)."""
    st = state(request)
    credential = presented(request.headers.get("authorization"))
    if credential is not None and credential.kind == "key":
        entry = await access.verify_key(st, credential, access.client_ip(st, request.scope))
        if entry.project_id != project_id:
            raise Problem(404, "no such project")
        access.require_scope(entry, READ)
        role = None
    else:
        role = (await current_session(request, project_id)).role
        if role is None:
            raise Problem(404, "no such project")
    row = await st.pool.fetchrow(f"{_PROJECT} WHERE id = $1 AND state <> 'purged'", project_id)
    if row is None:
        raise Problem(404, "no such project")
    return Project(**dict(row), role=role)


async def _actor(request: Request[Any, Any, Any], st: RouterState, project_id: uuid.UUID,
                 min_level: int) -> tuple[Actor, ProjectEntry, Session | None]:
    """The acting admin or API key for a project, its role or scopes checked against `min_level` here (and the
    key verified in full, prefix and secret, by `router.access`; the cell checks both again)."""
    project = st.directory.projects.get(project_id)
    credential = presented(request.headers.get("authorization"))
    ip = access.client_ip(st, request.scope)
    if credential is not None and credential.kind == "key":
        entry = await access.verify_key(st, credential, ip)
        if project is None or entry.project_id != project_id:
            raise Problem(404, "no such project")
        access.require_scope(entry, min_level)
        return (Actor(kind="key", project_id=str(project_id), key_prefix=entry.key_prefix, ip=ip, epoch=project.epoch),
                project, None)
    session = await current_session(request, project_id)
    if session.role is None or project is None:
        raise Problem(404, "no such project")
    if ROLE_LEVEL[session.role] < min_level:
        raise Problem(403, "your role in this project does not allow this")
    actor = Actor(kind="admin", project_id=str(project_id), user_id=str(session.user_id), role=session.role, ip=ip,
                  epoch=project.epoch)
    return actor, project, session


def _key_header(request: Request[Any, Any, Any], actor: Actor) -> dict[str, str] | None:
    """The presented key, passed on when a key acts, so the cell verifies it again (defence in depth)."""
    return {"authorization": request.headers["authorization"]} if actor.kind == "key" else None


def _relay(request: Request[Any, Any, Any], response: httpx.Response) -> Response[bytes]:
    """Pass a cell's answer through (status, body, region header). A problem's `instance` names the path the
    caller asked for, not the cell's internal one the router called on its behalf."""
    headers = {k: v for k, v in response.headers.items() if k.lower() in ("x-relay-region", "retry-after")}
    media = response.headers.get("content-type", "application/json")
    content = response.content
    if media.startswith("application/problem+json"):
        try:
            body = msgspec.json.decode(content)
        except msgspec.DecodeError:
            body = None
        if isinstance(body, dict) and str(body.get("instance", "")).startswith("/internal/"):
            body["instance"] = request.url.path
            content = msgspec.json.encode(body)
    return Response(content, status_code=response.status_code, media_type=media, headers=headers)


@post("/v1/projects/{project_id:uuid}/api-keys", status_code=201)
async def create_key(request: Request[Any, Any, Any], project_id: uuid.UUID, data: KeyIn) -> Response[bytes]:
    """Reserve a prefix in the key directory, then have the project's cell mint the key; the directory keeps
    the key's digest (computed here from the key the cell returns once), scopes and expiry, never the key.

    The cell mints the secret, as it did before the router kept digests: it is the data truth and holds the
    key's own record, and the secret crosses the hop once either way (in the cell's answer).
    """
    st = state(request)
    actor, project, _ = await _actor(request, st, project_id, ROLE_LEVEL["admin"])
    cell = st.cells[project.region]
    key_id = uuid7()
    for _attempt in range(5):  # a prefix collision is astronomically rare; retry rather than fail
        prefix = new_key_prefix(cell.tag)
        try:
            async with st.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    """INSERT INTO key_directory (key_prefix, key_id, project_id, region, pending)
                       VALUES ($1, $2, $3, $4, true)""", prefix, key_id, project_id, project.region)
                outbox_id = await provisioning.add(conn, project_id, "key.discard", {
                    "region": project.region, "key_id": str(key_id), "key_prefix": prefix})
            break
        except asyncpg.UniqueViolationError:
            continue
    else:
        raise Problem(503, "could not reserve a key prefix", retry_after=1)
    body = {"id": str(key_id), "key_prefix": prefix, "name": data.name, "scopes": data.scopes,
            "expires_at": data.expires_at.isoformat() if data.expires_at else None}
    try:
        response = await cell.call("POST", f"/internal/projects/{project_id}/api-keys", actor, json=body,
                                   headers=_key_header(request, actor))
    except Problem:
        raise  # the outbox discards the reservation (and any key the cell made) later
    if response.status_code == 421:  # the project moved meanwhile: this router's map is stale
        await routing.reload(st, project_id)
    if response.status_code != 201:
        # refused (scope, validation): nothing was created; drop the reservation now
        await provisioning.discard_key(st, project_id, project.region, key_id, prefix)
        await provisioning.done(st, outbox_id)
        return _relay(request, response)
    try:
        minted: _Minted | None = msgspec.json.decode(response.content, type=_Minted)
    except (msgspec.DecodeError, msgspec.ValidationError):
        minted = None
    if minted is None or minted.key is None or not minted.key.startswith(prefix + "_"):
        raise Problem(503, "the region answered without the new key", retry_after=1)  # the outbox discards it
    async with st.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE key_directory SET pending = false, key_digest = $2, scopes = $3, expires_at = $4,
                      updated_at = now()
                 WHERE key_prefix = $1 RETURNING {KEY_COLUMNS}""",
            prefix, digest(st.settings.key_pepper.encode(), minted.key), sorted(set(minted.scopes)),
            minted.expires_at)
        await audit.record(conn, action="api_key.created", actor_id=uuid.UUID(actor.user_id) if actor.user_id else None,
                           actor_key=actor.key_prefix, project_id=project_id, target_type="api_key", target_id=key_id,
                           ip=actor.ip, metadata={"key_prefix": prefix, "scopes": sorted(set(data.scopes))})
    await provisioning.done(st, outbox_id)
    if row is not None:
        await publish(st.redis, st.directory, Change(key=KeyEntry.of(row)))
    return _relay(request, response)


class _Minted(msgspec.Struct):
    """What the router reads of a cell's answer to a key creation (the rest is relayed untouched)."""

    scopes: list[str]
    key: str | None = None
    expires_at: datetime | None = None


@delete("/v1/projects/{project_id:uuid}/api-keys/{key_id:uuid}", status_code=200)
async def revoke_key(request: Request[Any, Any, Any], project_id: uuid.UUID, key_id: uuid.UUID) -> Response[bytes]:
    """Revoke a key: refused by every router at once, and by the cell within a second."""
    st = state(request)
    actor, project, session = await _actor(request, st, project_id, ROLE_LEVEL["admin"])
    cell = st.cells[project.region]
    if session is None:
        # An API key acting: the cell must verify it (and its admin scope) before anything changes.
        response = await cell.call("DELETE", f"/internal/projects/{project_id}/api-keys/{key_id}", actor,
                                   headers=_key_header(request, actor))
        if response.status_code == 421:  # the project moved meanwhile: this router's map is stale
            await routing.reload(st, project_id)
        if response.status_code != 200:
            return _relay(request, response)
    async with st.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE key_directory SET revoked = true, updated_at = now()
                WHERE key_id = $1 AND project_id = $2 RETURNING {KEY_COLUMNS}""", key_id, project_id)
        if row is None:
            raise Problem(404, "no such key")
        outbox_id = await provisioning.add(conn, project_id, "key.revoke",
                                           {"region": project.region, "key_id": str(key_id)})
        await audit.record(conn, action="api_key.revoked", actor_id=session.user_id if session else None,
                           actor_key=actor.key_prefix, project_id=project_id, target_type="api_key", target_id=key_id,
                           ip=actor.ip, metadata={"key_prefix": row["key_prefix"]})
    await publish(st.redis, st.directory, Change(key=KeyEntry.of(row)))
    if session is None:
        await provisioning.done(st, outbox_id)
        return _relay(request, response)
    try:
        response = await cell.call("DELETE", f"/internal/projects/{project_id}/api-keys/{key_id}", actor)
    except Problem:
        # Refused by every router already; the outbox tells the cell when it is back.
        return Response(b'{"id": "%s", "revoked": true}' % str(key_id).encode(), status_code=200,
                        media_type="application/json")
    await provisioning.done(st, outbox_id)
    return _relay(request, response)


ROUTES = [create_project, list_projects, get_project, create_key, revoke_key]
