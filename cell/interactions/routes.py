"""Interaction endpoints: ingest from SDKs, and the management list, get and triage."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, get, patch, post
from litestar.params import Parameter

from cell import audit, users
from cell.auth import READ, WRITE, require
from cell.context import caller, ctx
from cell.interactions import duplicates, queries, search, writer
from cell.interactions.types import (
    Interaction,
    InteractionDetail,
    InteractionIn,
    InteractionPatch,
    InteractionType,
    LogsOut,
    Severity,
    Status,
)
from cell.outbox import add as enqueue
from cell.paging import Page, decode_cursor, limit_of, newest_first
from cell.privacy import scrub
from common.ids import uuid7
from common.problems import Problem
from common.telemetry import current_traceparent


def _size(request: Request[Any, Any, Any]) -> int:
    """The body's declared size (what decides where it is scrubbed)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else 0


@post("/v1/ingest/interactions", status_code=201)
async def ingest_interaction(request: Request[Any, Any, Any], data: InteractionIn) -> Response[Interaction]:
    """Store one interaction; a retry with the same `id` returns the stored one with 200.

    The write goes through the process's group commit (cell/interactions/writer.py): concurrent requests
    share a transaction, and each is answered only once the transaction holding it has committed.
    """
    principal = require(await caller(request), ingest=True)
    pid = principal.project_id
    context = ctx(request)
    # Privacy rules redact before anything is stored; the report keeps which rule and how many, never values.
    rules, report = await scrub.rules_for(context.pool, pid), context.scrubber.report()

    def scrubbed() -> tuple[Any, Any, Any]:
        content = scrub.scrub_value(rules, data.content, "content", report)
        technical_context = scrub.scrub_value(rules, data.technical_context, "context", report)
        logs = None if data.logs is None else (scrub.scrub_value(rules, data.logs.console, "logs", report),
                                               scrub.scrub_value(rules, data.logs.network, "logs", report),
                                               scrub.scrub_value(rules, data.logs.errors, "logs", report))
        return content, technical_context, logs

    # A large body is scrubbed off the event loop: other tenants' requests go on meanwhile.
    content, technical_context, logs = await context.scrubber.run(_size(request), scrubbed)
    # Checked before the group commit: a refused identity fails this request alone.
    claim = await users.verify(context.pool, context.settings.secret_key, pid, data.user) if data.user else None
    item = writer.Pending({
        "id": data.id or uuid7(), "project_id": pid, "type": data.type, "source": data.source or "sdk",
        "user_id": None, "session_id": data.session_id,
        "content_text": queries.content_text(content), "content": content,
        "severity": data.severity, "tags": data.tags, "technical_context": technical_context,
        "privacy_scope": report.as_json() if report else None,
    }, claim, logs, current_traceparent())
    try:
        outcome = await context.ingest.store(item)
    except asyncpg.ForeignKeyViolationError as exc:  # the session went to another project meanwhile
        raise Problem(422, "session_id does not name a session of this project") from exc
    if outcome.status == 409:
        raise Problem(409, "this id is already used")
    if outcome.status == 422:
        raise Problem(422, "session_id does not name a session of this project")
    assert outcome.row is not None
    return Response(msgspec.convert(dict(outcome.row), Interaction), status_code=outcome.status)


@get("/v1/projects/{project_id:uuid}/interactions")
async def list_interactions(
    request: Request[Any, Any, Any],
    project_id: uuid.UUID,
    type: InteractionType | None = None,
    status: Status | None = None,
    severity: Severity | None = None,
    tag: str | None = None,
    assignee_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    duplicate_group: str | None = None,
    q: str | None = Parameter(default=None, max_length=500),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page[Interaction]:
    """Interactions newest first, filtered; `q` is full-text search over the user's words."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    f = queries.Filters(project_id)
    f.add("type = {}", type)
    f.add("status = {}", status)
    f.add("severity = {}", severity)
    f.add("tags @> ARRAY[{}]::text[]", tag)
    f.add("assignee_id = {}", assignee_id)
    f.add("session_id = {}", session_id)
    f.add("user_id = {}", user_id)
    f.add("ai_duplicate_group_id = {}", duplicate_group)
    f.add("created_at > {}", created_after)
    f.add("created_at < {}", created_before)
    after = decode_cursor(cursor) if cursor else None
    pool = ctx(request).pool
    rows = await (search.page(pool, f, q, after, size) if q is not None else queries.page(pool, f, after, size))
    return newest_first([msgspec.convert(dict(r), Interaction) for r in rows], size)


@get("/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}")
async def get_interaction(request: Request[Any, Any, Any], project_id: uuid.UUID,
                          interaction_id: uuid.UUID) -> InteractionDetail:
    """One interaction with its logs."""
    require(await caller(request, project_id), project_id, level=READ)
    pool = ctx(request).pool
    row = await queries.get(pool, project_id, interaction_id)
    if row is None:
        raise Problem(404, "no such interaction")
    logs = await queries.get_logs(pool, project_id, interaction_id)
    detail = msgspec.convert(dict(row), InteractionDetail)
    if logs is not None:
        detail.logs = msgspec.convert(dict(logs), LogsOut)
    return detail


@patch("/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}")
async def triage_interaction(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID,
                             data: InteractionPatch) -> Interaction:
    """Change status, severity, tags or assignee; audited in the same transaction."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    if not changes:
        raise Problem(422, "nothing to change: send status, severity, tags or assignee_id")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE interactions SET {sets}, updated_at = now() WHERE project_id = $1 AND id = $2"
            f" RETURNING {queries.COLUMNS}",
            project_id, interaction_id, *changes.values(),
        )
        if row is None:
            raise Problem(404, "no such interaction")
        await audit.record(conn, principal, "interaction.updated", "interaction", interaction_id,
                           {"fields": sorted(changes)})
        await enqueue(conn, project_id, "interaction.updated",
                      {"interaction_id": str(interaction_id), "fields": sorted(changes)})
    return msgspec.convert(dict(row), Interaction)


ROUTES = [ingest_interaction, list_interactions, get_interaction, triage_interaction, *duplicates.ROUTES]
