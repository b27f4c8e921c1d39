"""Session endpoints: ingest from SDKs, and the management list and get."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi import ResponseSpec

from cell import users
from cell.auth import READ, require
from cell.context import caller, ctx
from cell.interactions.queries import Filters
from cell.paging import Page, decode_cursor, encode_cursor, limit_of
from cell.privacy import scrub
from cell.projects import secret as project_secret
from cell.sessions import queries
from cell.sessions.types import Environment, Session, SessionDetail, SessionIn
from common.ids import uuid7
from common.problems import Problem


@post("/v1/ingest/sessions", status_code=201, responses={
    200: ResponseSpec(data_container=Session, description="The session existed: one more page view was counted."),
})
async def ingest_session(request: Request[Any, Any, Any], data: SessionIn) -> Response[Session]:
    """Register a session (201) or, for a known `id`, count a page view and refresh it (200)."""
    principal = require(await caller(request), ingest=True)
    pid = principal.project_id
    pool = ctx(request).pool
    # User agents and device details can carry what the privacy rules redact (tokens in a webview's UA,
    # an email in a device name): scrubbed before they are stored, what was found counted on the session.
    # A large body (a big `device`) is scrubbed off the event loop, on the cell's scrubbing pool, with its budget.
    scrubber = ctx(request).scrubber
    rules, report = await scrub.rules_for(pool, pid), scrubber.report()
    declared = request.headers.get("content-length", "")
    device, user_agent = await scrubber.run(int(declared) if declared.isdigit() else 0, lambda: (
        scrub.scrub_value(rules, data.device, users.TRAITS_SCOPE, report),
        data.user_agent and scrub.scrub_text(rules, data.user_agent, users.TRAITS_SCOPE, report)))
    async with pool.acquire() as conn, conn.transaction():
        secret = await project_secret.project_secret(conn, ctx(request).settings.secret_key, pid)
        assert secret is not None  # the caller's project is homed here
        user = (await users.upsert(conn, pid, data.user, ctx(request).settings.secret_key, rules)
                if data.user else None)
        user_id = user.id if user else None
        row = await queries.upsert(conn, {
            "id": data.id or uuid7(), "project_id": pid, "user_id": user_id, "device": device,
            "app_version": data.app_version, "environment": data.environment,
            "ip_hash": queries.ip_hash(secret, principal.ip), "user_agent": user_agent,
            "privacy_scope": report.as_json() if report else None,
        })
        if row is None:  # raising rolls back the end-user upsert too
            raise Problem(409, "this id is already used")
    return Response(msgspec.convert(dict(row), Session), status_code=201 if row["inserted"] else 200)


@get("/v1/projects/{project_id:uuid}/sessions")
async def list_sessions(
    request: Request[Any, Any, Any],
    project_id: uuid.UUID,
    user_id: uuid.UUID | None = None,
    environment: Environment | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page[SessionDetail]:
    """Sessions most recently started first; `created_*` bound the start time."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    f = Filters(project_id)
    f.add("user_id = {}", user_id)
    f.add("environment = {}", environment)
    f.add("started_at > {}", created_after)
    f.add("started_at < {}", created_before)
    rows = await queries.page(ctx(request).pool, f, decode_cursor(cursor) if cursor else None, size)
    data = [msgspec.convert(dict(r), SessionDetail) for r in rows[:size]]
    more = len(rows) > size
    return Page(data, encode_cursor(data[-1].started_at, data[-1].id) if more else None)


@get("/v1/projects/{project_id:uuid}/sessions/{session_id:uuid}")
async def get_session(request: Request[Any, Any, Any], project_id: uuid.UUID, session_id: uuid.UUID) -> SessionDetail:
    """One session of the project."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get(ctx(request).pool, project_id, session_id)
    if row is None:
        raise Problem(404, "no such session")
    return msgspec.convert(dict(row), SessionDetail)


ROUTES = [ingest_session, list_sessions, get_session]
