"""`/v1/projects/{id}/move`: ask for a project's move to another region (owner only) and follow it.

The request only records the move; the router's move driver (router/moves/driver.py) carries it out in
the background, resumable after any crash, while the project keeps serving.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Response, get, post

from common.keys import bearer
from common.problems import Problem
from router import audit
from router.auth.routes import current_session
from router.directory import Change, ProjectEntry, publish
from router.moves import store
from router.moves.types import Move, MoveIn, shown
from router.state import RouterState, state


def _key_project(st: RouterState, token: str) -> uuid.UUID:
    """The project of an API key presented here (401 when unknown or revoked)."""
    entry = st.directory.key(token[:12])
    if entry is None or entry.revoked:
        raise Problem(401, "invalid or revoked API key")
    return entry.project_id


@post("/v1/projects/{project_id:uuid}/move", status_code=202)
async def start_move(request: Request[Any, Any, Any], project_id: uuid.UUID, data: MoveIn) -> Response[Move]:
    """Move the project to `to_region`: its data is copied, verified, switched over and purged at the source;
    its keys keep working. 202 with the move; follow it with GET."""
    st = state(request)
    token = bearer(request.headers.get("authorization"))
    if token is not None and token.startswith("rk_"):
        if _key_project(st, token) != project_id:
            raise Problem(404, "no such project")
        raise Problem(403, "a project is moved by its owner, signed in to the dashboard")
    session = await current_session(request, project_id)
    if session.role is None:
        raise Problem(404, "no such project")
    if session.role != "owner":
        raise Problem(403, "only the project's owner can move it to another region")
    async with st.pool.acquire() as conn, conn.transaction():
        move, directory = await store.start(conn, project_id, data.to_region, st.settings.cells, session.user_id)
        await audit.record(conn, action="project.move_requested", actor_id=session.user_id, project_id=project_id,
                           target_type="move", target_id=move["id"], ip=request.client.host if request.client else None,
                           metadata={"from_region": move["from_region"], "to_region": move["to_region"]})
    await publish(st.redis, st.directory, Change(project=ProjectEntry(**directory)))
    return Response(shown(move), status_code=202)


@get("/v1/projects/{project_id:uuid}/move")
async def get_move(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Move:
    """The project's latest move and how far it got (any member, or a key of the project)."""
    st = state(request)
    token = bearer(request.headers.get("authorization"))
    if token is not None and token.startswith("rk_"):
        if _key_project(st, token) != project_id:
            raise Problem(404, "no such project")
    elif (await current_session(request, project_id)).role is None:
        raise Problem(404, "no such project")
    move = await store.latest(st.pool, project_id)
    if move is None:
        raise Problem(404, "this project has never been moved")
    return shown(move)


ROUTES = [start_move, get_move]
