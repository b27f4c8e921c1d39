"""Filing interactions as issues in Linear, Jira and GitHub: the request endpoint and the SQL the sync shares.

`POST …/interactions/{id}/links {provider}` asks for an issue: it records the
request and enqueues `integration.create_issue` in one transaction and
answers 202; the worker (cell/integrations/jobs.py) files the issue and links
it. `GET` on the same path (cell/feedback) lists what the interaction is
linked to, the filed issue included once it is there.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec
from litestar import Request, Response, post
from litestar.openapi import ResponseSpec

from cell import audit
from cell.auth import WRITE, Principal, require
from cell.context import caller, ctx
from cell.outbox import add as enqueue
from common.ids import uuid7
from common.problems import Problem

IssueProvider = Literal["linear", "jira", "github"]
ISSUE_PROVIDERS: tuple[IssueProvider, ...] = ("linear", "jira", "github")
CREATE_ISSUE = "integration.create_issue"
LINKED_FIELDS = ["linked_issue_id", "linked_issue_provider", "linked_issue_url"]


class IssueRequestIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST …/interactions/{id}/links`: which tracker to file the interaction in."""

    provider: IssueProvider


class IssueRequest(msgspec.Struct, kw_only=True):
    """The answer: `pending` (202) until the worker filed it, `linked` (200) once it is."""

    interaction_id: uuid.UUID
    provider: IssueProvider
    status: Literal["pending", "linked"]
    external_id: str | None = None
    external_url: str | None = None
    requested_at: datetime | None = None


def system(project_id: uuid.UUID, provider: str, ip: str | None = None) -> Principal:
    """The actor of changes the sync makes on its own (audited as actor_type 'system')."""
    return Principal(project_id, 0, False, "system", f"integration:{provider}", ip)


async def existing_link(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID, interaction_id: uuid.UUID,
                        provider: str) -> asyncpg.Record | None:
    """The issue this interaction is already filed as in this provider (link row or its own columns), if any."""
    return await conn.fetchrow(
        """SELECT external_id, external_url FROM integration_links
            WHERE project_id = $1 AND internal_type = 'interaction' AND internal_id = $2
              AND provider::text = $3::text
           UNION ALL
           SELECT linked_issue_id, linked_issue_url FROM interactions
            WHERE project_id = $1 AND id = $2 AND linked_issue_provider::text = $3::text
              AND linked_issue_id IS NOT NULL
           LIMIT 1""", project_id, interaction_id, provider)


async def link_issue(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID, provider: str,
                     external_id: str, external_url: str, key: str) -> bool:
    """Write the filed issue onto the interaction and into integration_links, in the caller's transaction.

    The interaction's own linked_issue_* columns keep the first issue it was
    filed as; every issue gets its link row. False when the interaction is gone
    (erased while the issue was being filed): nothing is written then.
    """
    if await conn.fetchval("SELECT 1 FROM interactions WHERE project_id = $1 AND id = $2 FOR UPDATE",
                           project_id, interaction_id) is None:
        return False
    inserted = await conn.fetchval(
        """INSERT INTO integration_links (id, project_id, provider, external_id, internal_type, internal_id,
                                          external_url, external_state, state_changed_at)
           VALUES ($1, $2, $3, $4, 'interaction', $5, $6, 'open', now())
           ON CONFLICT (project_id, provider, external_id, internal_type, internal_id) DO NOTHING RETURNING id""",
        uuid7(), project_id, provider, external_id, interaction_id, external_url)
    changed = await conn.fetchval(
        """UPDATE interactions SET linked_issue_provider = $3, linked_issue_id = $4, linked_issue_url = $5,
                                   updated_at = now()
            WHERE project_id = $1 AND id = $2 AND linked_issue_id IS NULL RETURNING id""",
        project_id, interaction_id, provider, external_id, external_url)
    await conn.execute(
        """UPDATE integration_issue_requests SET external_id = $4, external_url = $5, completed_at = now(),
                                                 last_error = NULL
            WHERE project_id = $1 AND interaction_id = $2 AND provider = $3""",
        project_id, interaction_id, provider, external_id, external_url)
    if inserted is not None:
        await audit.record(conn, system(project_id, provider), "interaction.issue_linked", "interaction",
                           interaction_id, {"provider": provider, "external_id": external_id, "key": key})
    if changed is not None:
        await enqueue(conn, project_id, "interaction.updated",
                      {"interaction_id": str(interaction_id), "fields": LINKED_FIELDS})
    return True


@post("/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/links", status_code=202,
      responses={200: ResponseSpec(IssueRequest, description="The interaction is already filed with this provider")})
async def request_issue(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID,
                        data: IssueRequestIn) -> Response[IssueRequest]:
    """File the interaction as an issue in a configured tracker: 202 and a job, or 200 if it already is."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM interactions WHERE project_id = $1 AND id = $2 FOR UPDATE",
                               project_id, interaction_id) is None:
            raise Problem(404, "no such interaction")
        linked = await existing_link(conn, project_id, interaction_id, data.provider)
        if linked is not None:
            return Response(IssueRequest(interaction_id=interaction_id, provider=data.provider, status="linked",
                                         external_id=linked["external_id"], external_url=linked["external_url"]),
                            status_code=200)
        if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM integrations WHERE project_id = $1 AND provider = $2 AND enabled)",
                project_id, data.provider):
            raise Problem(409, f"the project has no enabled {data.provider} integration; configure it first")
        requested_at: datetime = await conn.fetchval(
            """INSERT INTO integration_issue_requests (project_id, interaction_id, provider) VALUES ($1, $2, $3)
               ON CONFLICT (project_id, interaction_id, provider)
               DO UPDATE SET requested_at = now(), last_error = NULL RETURNING requested_at""",
            project_id, interaction_id, data.provider)
        await enqueue(conn, project_id, CREATE_ISSUE, {"project_id": str(project_id),
                                                       "interaction_id": str(interaction_id),
                                                       "provider": data.provider})
        await audit.record(conn, principal, "interaction.issue_requested", "interaction", interaction_id,
                           {"provider": data.provider})
    return Response(IssueRequest(interaction_id=interaction_id, provider=data.provider, status="pending",
                                 requested_at=requested_at), status_code=202)


ROUTES = [request_issue]
