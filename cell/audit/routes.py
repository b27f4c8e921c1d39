"""The audit log listing: who changed what in a project, and when.

Reading it needs admin (role admin or owner, or a key with the `admin` scope).
The log is a security record about the team rather than product data: it names
every member and key that acted (user ids, key prefixes), their truncated IPs,
and the history of key, integration, webhook and privacy changes — the very
changes the contract reserves for admins. Viewers and agents triage
interactions; they have no need to watch their colleagues, and an attacker
holding a leaked read key should not learn which keys exist or when they rotate.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Request, get
from litestar.params import Parameter

from cell.auth import ADMIN, require
from cell.context import caller, ctx
from cell.interactions.queries import Filters
from cell.paging import Page, decode_cursor, limit_of, newest_first
from common.audit import AuditEntry

ActorType = Literal["user", "admin", "system", "api"]
"""Who can act in a cell (the filter's values; `anonymous` is the router's only)."""


_COLUMNS = "id, actor_type::text AS actor_type, actor_id, action, target_type, target_id, meta, ip_address, created_at"


@get("/v1/projects/{project_id:uuid}/audit-logs")
async def list_audit_logs(
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
) -> Page[AuditEntry]:
    """Audit entries newest first, filtered by action, actor, target and time (admin only; see the module)."""
    require(await caller(request, project_id), project_id, level=ADMIN)
    size = limit_of(limit)
    f = Filters(project_id)
    f.add("action = {}", action)
    f.add("actor_type = {}::audit_actor_type", actor_type)
    f.add("actor_id = {}", actor_id)
    f.add("target_type = {}", target_type)
    f.add("target_id = {}", target_id)
    f.add("created_at > {}", created_after)
    f.add("created_at < {}", created_before)
    if cursor:
        f.params.extend(decode_cursor(cursor))
        n = len(f.params)
        f.clauses.append(f"(created_at, id) < (${n - 1}, ${n})")
    f.params.append(size + 1)
    rows = await ctx(request).pool.fetch(
        f"SELECT {_COLUMNS} FROM audit_logs WHERE {f.where()} ORDER BY created_at DESC, id DESC"
        f" LIMIT ${len(f.params)}", *f.params)
    return newest_first([msgspec.convert(dict(r), AuditEntry) for r in rows], size)


ROUTES = [list_audit_logs]
