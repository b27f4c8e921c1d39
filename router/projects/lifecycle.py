"""A project's rename and deletion, and its audit log merged from both planes.

`PATCH /v1/projects/{id} {name}` (admin) renames the project in the directory
and, through the provisioning outbox, in its cell.

`DELETE /v1/projects/{id}?confirm=<its exact name>` (owner) answers 202 and
deletes the project in three steps, each resumable:

1. Fence, in one control-DB transaction: the directory marks the project
   `deleting` (a new epoch), a `project_deletions` row records the request, a
   `project.delete` outbox row makes sure the rest happens, and the request
   is audited. Every router learns the new state at once.
2. Erase: the project's cell is asked, again and again, to erase it
   (cell/projects/lifecycle.py); it refuses every request for the project
   from its first call, erases a few seconds' worth per call, and answers its
   signed deletion receipt once nothing of the project is left.
3. Forget: the receipt is kept in `project_deletions`, the project and its
   keys leave the directory, and every router drops them at once (401 for its
   keys, 404 for the project).

The request's own background task runs steps 2 and 3 at once; when it cannot
finish (the cell down, the router killed), the outbox relay
(router/projects/provisioning.py) runs them again until they are done. A
session advisory lock keeps two runners off the same project.

`GET /v1/projects/{id}/audit-logs` returns the router's entries for the project
merged by time with the cell's, in the cell's list shape, under one cursor.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, delete, get, patch
from litestar.background_tasks import BackgroundTask
from litestar.params import Parameter

from common.audit import ActorType
from common.ids import uuid7
from common.keys import bearer
from common.paging import decode_cursor, limit_of
from common.problems import Problem
from router import audit
from router.auth.routes import client_ip, current_session
from router.auth.sessions import Session
from router.directory import Change, KeyEntry, ProjectEntry, publish
from router.moves import routing
from router.moves.wire import StepError, call
from router.projects import provisioning
from router.projects.routes import ROLE_LEVEL, Project, _actor, _relay
from router.state import RouterState, state

log = logging.getLogger("relay.router.lifecycle")
DELETABLE = ("provisioning", "active")
"""Directory states a project may be deleted from (not while a move is under way)."""
_LOCK_SPACE = 0x44454C  # "DEL": advisory locks of project deletions, keyed by the project id's hash


class RenameIn(msgspec.Struct, kw_only=True):
    """`PATCH /v1/projects/{id}`."""

    name: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.name.strip()) <= 200:
            raise ValueError("name must be 1 to 200 characters - at `$.name`")


class Deletion(msgspec.Struct, kw_only=True):
    """A project's deletion: `erasing`, then `done` with the cell's signed receipt."""

    id: uuid.UUID
    project_id: uuid.UUID
    region: str
    state: str
    requested_by: uuid.UUID | None
    created_at: datetime
    finished_at: datetime | None
    receipt: dict[str, Any] | None


_DELETION = """SELECT id, project_id, epoch, region, state, requested_by, created_at, finished_at, receipt
                 FROM project_deletions WHERE project_id = $1"""
_DIRECTORY = "id, name, region, state::text AS state, epoch"


async def _dashboard_user(request: Request[Any, Any, Any], project_id: uuid.UUID, what: str) -> Session:
    """The signed-in member acting on the project (404 for others); an API key is refused with 403."""
    st = state(request)
    token = bearer(request.headers.get("authorization"))
    if token is not None and token.startswith("rk_"):
        # The key is checked in full first (a made-up secret is 401, another project's key 404), as everywhere.
        await _actor(request, st, project_id, ROLE_LEVEL["viewer"])
        raise Problem(403, f"a project is {what} by a member signed in to the dashboard")
    session = await current_session(request, project_id)
    if session.role is None:
        raise Problem(404, "no such project")
    return session


# -- Rename ----------------------------------------------------------------------------------------------------------

@patch("/v1/projects/{project_id:uuid}")
async def rename_project(request: Request[Any, Any, Any], project_id: uuid.UUID, data: RenameIn) -> Project:
    """Rename the project (role admin or owner): the directory at once, its cell through the outbox."""
    st = state(request)
    session = await _dashboard_user(request, project_id, "renamed")
    assert session.role is not None
    if ROLE_LEVEL[session.role] < ROLE_LEVEL["admin"]:
        raise Problem(403, "your role in this project does not allow this")
    async with st.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE project_directory SET name = $2, updated_at = now()
                 WHERE id = $1 AND state NOT IN ('deleting', 'purged', 'failed')
                 RETURNING {_DIRECTORY}, created_at""", project_id, data.name.strip())
        if row is None:
            raise Problem(404, "no such project")
        outbox_id = await provisioning.add(conn, project_id, "project.rename", {})
        await audit.record(conn, action="project.renamed", actor_id=session.user_id, project_id=project_id,
                           target_type="project", target_id=project_id, ip=client_ip(request))
    entry = ProjectEntry(**{k: row[k] for k in ("id", "name", "region", "state", "epoch")})
    await publish(st.redis, st.directory, Change(project=entry))
    try:
        await rename_in_cell(st, project_id)
        await provisioning.done(st, outbox_id)
    except Problem:  # the directory holds the new name; the outbox tells the cell when it is back
        log.warning("project rename reaches its cell later (outbox %d)", outbox_id)
    return Project(id=row["id"], name=row["name"], region=row["region"], created_at=row["created_at"],
                   role=session.role, state=row["state"])


async def rename_in_cell(st: RouterState, project_id: uuid.UUID) -> None:
    """Give the cell the directory's current name (outbox step `project.rename`; repeating it is harmless)."""
    row = await st.pool.fetchrow("SELECT name, region, state::text AS state FROM project_directory WHERE id = $1",
                                 project_id)
    if row is None or row["state"] in ("provisioning", "deleting"):
        return  # gone, or provisioning with the new name, or about to be erased
    response = await st.cells[row["region"]].call("PATCH", f"/internal/projects/{project_id}", provisioning.ROUTER,
                                                  json={"name": row["name"]})
    if response.status_code == 421:  # moved meanwhile: the next attempt reads the new region
        raise Problem(503, "the project moved; renaming again", retry_after=1)
    if response.status_code not in (200, 404):
        raise Problem(503, f"region {row['region']} refused the rename ({response.status_code})", retry_after=5)


# -- Deletion --------------------------------------------------------------------------------------------------------

@delete("/v1/projects/{project_id:uuid}", status_code=202)
async def delete_project(request: Request[Any, Any, Any], project_id: uuid.UUID,
                         confirm: str | None = Parameter(default=None, max_length=200)) -> Response[Deletion]:
    """Delete the project and everything of it (owner; `confirm` is its exact name): 202 and the deletion, which
    `GET …/deletion` follows; the project shows `state: "deleting"` until it is gone."""
    st = state(request)
    session = await _dashboard_user(request, project_id, "deleted")
    if session.role != "owner":
        raise Problem(403, "only an owner can delete the project")
    async with st.pool.acquire() as conn, conn.transaction():
        project = await conn.fetchrow(f"SELECT {_DIRECTORY} FROM project_directory WHERE id = $1 FOR UPDATE",
                                      project_id)
        if project is None:
            raise Problem(404, "no such project")
        if confirm is None or confirm != project["name"]:
            raise Problem(422, "confirm the deletion with the project's exact name as `?confirm=`")
        if project["state"] == "deleting":
            existing = await conn.fetchrow(_DELETION, project_id)
            assert existing is not None
            return Response(msgspec.convert(dict(existing), Deletion), status_code=202)
        if project["state"] not in DELETABLE:
            raise Problem(409, f"the project is {project['state']} (a move is under way); delete it afterwards")
        fenced = await conn.fetchrow(
            f"""UPDATE project_directory SET state = 'deleting', epoch = epoch + 1, updated_at = now()
                 WHERE id = $1 RETURNING {_DIRECTORY}""", project_id)
        assert fenced is not None
        row = await conn.fetchrow(
            """INSERT INTO project_deletions (id, project_id, region, epoch, requested_by)
               VALUES ($1, $2, $3, $4, $5)
               RETURNING id, project_id, region, state, requested_by, created_at, finished_at, receipt""",
            uuid7(), project_id, fenced["region"], fenced["epoch"], session.user_id)
        assert row is not None
        await provisioning.add(conn, project_id, "project.delete", {"deletion_id": str(row["id"])})
        await audit.record(conn, action="project.deletion_requested", actor_id=session.user_id,
                           project_id=project_id, target_type="project", target_id=project_id, ip=client_ip(request),
                           metadata={"deletion_id": str(row["id"]), "region": fenced["region"]})
    await publish(st.redis, st.directory, Change(project=ProjectEntry(**dict(fenced))))
    return Response(msgspec.convert(dict(row), Deletion), status_code=202,
                    background=BackgroundTask(_delete_now, st, project_id))


async def _delete_now(st: RouterState, project_id: uuid.UUID) -> None:
    """Right after the 202: erase and forget; what does not finish now, the outbox finishes."""
    try:
        await run_deletion(st, project_id)
    except Problem as problem:
        log.warning("project deletion continues from the outbox: %s", problem.detail)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        log.warning("project deletion continues from the outbox: %s", type(exc).__name__)


async def run_deletion(st: RouterState, project_id: uuid.UUID) -> None:
    """Outbox step `project.delete`: drive the cell's erasure to its receipt, then forget the project.

    503 problems (the cell unreachable or refusing for now, another runner at it) leave it to the next try.
    """
    lock_key = (_LOCK_SPACE, str(project_id))
    async with st.pool.acquire() as lock:
        if not await lock.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2::text))", *lock_key):
            raise Problem(503, "this project's deletion is being run by another process", retry_after=2)
        try:
            deletion = await st.pool.fetchrow(_DELETION, project_id)
            if deletion is None or deletion["state"] == "done":
                return
            receipt = await _erase(st, project_id, deletion)
            await _forget(st, project_id, deletion, receipt)
        finally:
            await lock.fetchval("SELECT pg_advisory_unlock($1, hashtext($2::text))", *lock_key)


async def _erase(st: RouterState, project_id: uuid.UUID, deletion: asyncpg.Record) -> dict[str, Any] | None:
    """Call the cell's erase until it answers with its receipt (None: the cell never held the project)."""
    cell = st.cells[deletion["region"]]
    body = {"deletion_id": str(deletion["id"]), "epoch": deletion["epoch"]}
    while True:
        try:
            response = await call(cell, "POST", f"/internal/projects/{project_id}/erase", json=body,
                                  ok=(200, 202, 404), what="erasing the project")
        except StepError as exc:
            raise Problem(503, str(exc), retry_after=5) from exc
        if response.status_code == 404:  # never provisioned there, and no receipt: nothing of it to erase
            return None
        if response.status_code == 200:
            found: dict[str, Any] = msgspec.json.decode(response.content)["receipt"]
            return found
        await st.pool.execute(
            """UPDATE project_deletions SET progress = jsonb_build_object('erase_calls',
                      coalesce((progress->>'erase_calls')::int, 0) + 1), updated_at = now()
                WHERE project_id = $1""", project_id)


async def _forget(st: RouterState, project_id: uuid.UUID, deletion: asyncpg.Record,
                  receipt: dict[str, Any] | None) -> None:
    """Keep the receipt, drop the project and its keys from the directory, and tell every router."""
    async with st.pool.acquire() as conn, conn.transaction():
        keys = await conn.fetch("DELETE FROM key_directory WHERE project_id = $1"
                                " RETURNING key_prefix, key_id, project_id, region, revoked", project_id)
        project = await conn.fetchrow(f"DELETE FROM project_directory WHERE id = $1 RETURNING {_DIRECTORY}",
                                      project_id)
        await conn.execute(
            """UPDATE project_deletions SET state = 'done', receipt = $2, finished_at = now(), updated_at = now()
                WHERE project_id = $1""", project_id, receipt)
        meta: dict[str, Any] = {"deletion_id": str(deletion["id"]), "region": deletion["region"], "keys": len(keys)}
        if receipt is not None:
            meta |= {"receipt_seq": receipt["seq"], "receipt_hash": receipt["hash"]}
        await audit.record(conn, action="project.deleted", actor_id=deletion["requested_by"], project_id=project_id,
                           target_type="project", target_id=project_id, ip=None, metadata=meta)
    changes = [Change(key=KeyEntry(**dict(key)), gone=True) for key in keys]
    if project is not None:
        changes.append(Change(project=ProjectEntry(**dict(project)), gone=True))
    if changes:  # together: between one key's removal and the next, a request could meet a half-forgotten project
        await publish(st.redis, st.directory, *changes)
    log.info("project %s deleted from %s; %d keys forgotten", project_id, deletion["region"], len(keys))


@get("/v1/projects/{project_id:uuid}/deletion")
async def get_deletion(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Deletion:
    """The project's deletion and, once done, the cell's signed receipt: any member while it runs, and the
    account that asked for it afterwards (when the project and its members are gone)."""
    st = state(request)
    token = bearer(request.headers.get("authorization"))
    if token is not None and token.startswith("rk_"):
        await _dashboard_user(request, project_id, "deleted")  # 401, 404 or 403: keys never read it
    session = await current_session(request, project_id)
    row = await st.pool.fetchrow(_DELETION, project_id)
    if row is None or (session.role is None and row["requested_by"] != session.user_id):
        raise Problem(404, "no deletion of this project")
    return msgspec.convert(dict(row), Deletion)


# -- Audit logs ------------------------------------------------------------------------------------------------------

@get("/v1/projects/{project_id:uuid}/audit-logs")
async def project_audit_logs(
    request: Request[Any, Any, Any],
    project_id: uuid.UUID,
    action: str | None = Parameter(default=None, max_length=255),
    actor_type: ActorType | None = None,
    actor_id: str | None = Parameter(default=None, max_length=255),
    target_type: str | None = Parameter(default=None, max_length=100),
    target_id: str | None = Parameter(default=None, max_length=255),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Response[Any]:
    """The project's audit log (admin): the cell's entries and the router's, newest first, one cursor for both."""
    st = state(request)
    actor, project, _ = await _actor(request, st, project_id, ROLE_LEVEL["admin"])
    size = limit_of(limit)
    after = decode_cursor(cursor) if cursor else None
    filters = audit.Filters(action=action, actor_type=actor_type, actor_id=actor_id, target_type=target_type,
                            target_id=target_id, created_after=created_after, created_before=created_before)
    params = {**filters.params(), "limit": str(size), **({"cursor": cursor} if cursor else {})}
    key = bearer(request.headers.get("authorization")) if actor.kind == "key" else None
    # The cell answers first: it checks a key's scope (only admin keys read the log) before anything is shown.
    response = await st.cells[project.region].call(
        "GET", f"/v1/projects/{project_id}/audit-logs", actor, params=params,
        headers={"authorization": f"Bearer {key}"} if key else None)
    if response.status_code == 421:
        await routing.reload(st, project_id)
    if response.status_code != 200:
        return _relay(request, response)
    cell = msgspec.json.decode(response.content, type=audit.AuditPage)
    own = await audit.for_project(st.pool, project_id, filters, after, size + 1)
    held = [msgspec.structs.replace(e, source=project.region) for e in cell.data]
    page = audit.merge([held, own], size, more=cell.next_cursor is not None)
    return Response(page, headers={k: v for k, v in response.headers.items() if k.lower() == "x-relay-region"})


ROUTES = [rename_project, delete_project, get_deletion, project_audit_logs]
