"""`/v1/projects/{id}/move`: ask for a project's move to another region (owner only) and follow it.

The request only records the move; the router's move driver (router/moves/driver.py) carries it out in
the background, resumable after any crash, while the project keeps serving.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Response, get, post

from common.access import READ
from common.keys import presented
from common.problems import Problem
from router import access, audit
from router.auth.routes import current_session
from router.directory import Change, KeyEntry, ProjectEntry, publish
from router.moves import store
from router.moves.types import Move, MoveIn, shown
from router.state import state


async def _key_of(request: Request[Any, Any, Any], project_id: uuid.UUID) -> KeyEntry | None:
    """The API key presented, verified in full (401) and of this project (404); None for a session caller."""
    st = state(request)
    credential = presented(request.headers.get("authorization"))
    if credential is None or credential.kind != "key":
        return None
    entry = await access.verify_key(st, credential, access.client_ip(st, request.scope))
    if entry.project_id != project_id:
        raise Problem(404, "no such project")
    return entry


@post("/v1/projects/{project_id:uuid}/move", status_code=202)
async def start_move(request: Request[Any, Any, Any], project_id: uuid.UUID, data: MoveIn) -> Response[Move]:
    """Move the project to `to_region`: its data is copied, verified, switched over and purged at the source;
    its keys keep working. 202 with the move; follow it with GET."""
    st = state(request)
    if await _key_of(request, project_id) is not None:
        raise Problem(403, "a project is moved by its owner, signed in to the dashboard")
    session = await current_session(request, project_id)
    if session.role is None:
        raise Problem(404, "no such project")
    if session.role != "owner":
        raise Problem(403, "only the project's owner can move it to another region")
    async with st.pool.acquire() as conn, conn.transaction():
        move, directory = await store.start(conn, project_id, data.to_region, st.settings.cells, session.user_id)
        await audit.record(conn, action="project.move_requested", actor_id=session.user_id, project_id=project_id,
                           target_type="move", target_id=move["id"], ip=access.client_ip(st, request.scope),
                           metadata={"from_region": move["from_region"], "to_region": move["to_region"]})
    await publish(st.redis, st.directory, Change(project=ProjectEntry(**directory)))
    return Response(shown(move), status_code=202)


@get("/v1/projects/{project_id:uuid}/move")
async def get_move(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Move:
    """The project's latest move and how far it got (any member, or a key of the project with the read scope)."""
    st = state(request)
    entry = await _key_of(request, project_id)
    if entry is not None:
        access.require_scope(entry, READ)
    elif (await current_session(request, project_id)).role is None:
        raise Problem(404, "no such project")
    move = await store.latest(st.pool, project_id)
    if move is None:
        raise Problem(404, "this project has never been moved")
    return shown(move)


ROUTES = [start_move, get_move]
