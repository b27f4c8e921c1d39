"""The router's audit trail: its own writes and sign-ins, and how they read next to the cells' logs.

The cells record the changes made in them (cell/audit); the router records
what only it does: projects created, renamed and deleted, keys created and
revoked through it, moves requested, members and invitations, sign-ins (and
failed ones), and account changes. An entry holds ids, the action and its
target, the time and the client address truncated to its /24 (/48): no name,
email address, password or token, so the global control plane keeps no
customer data (the residency invariant).

A project's entries are read merged with its cell's, newest first, under one
cursor (common.paging): both planes order their entries by (created_at, id),
so the position after the last entry shown is a position in each of them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from common.audit import AuditEntry
from common.ids import uuid7
from common.netaddr import truncate_ip
from common.paging import encode_cursor


class AuditPage(msgspec.Struct):
    """One page of audit entries (the cell's list shape)."""

    data: list[AuditEntry]
    next_cursor: str | None


class Filters(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The filters of an audit listing, as the cell's `GET …/audit-logs` takes them."""

    action: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def params(self) -> dict[str, str]:
        """The filters as query parameters for the cell."""
        out: dict[str, str] = {}
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None:
                out[name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out


async def record(db: asyncpg.Pool | asyncpg.Connection, *, action: str, actor_id: uuid.UUID | None,
                 project_id: uuid.UUID | None, target_type: str | None, target_id: object, ip: str | None,
                 metadata: dict[str, Any] | None = None, actor_key: str | None = None,
                 actor_type: str | None = None) -> None:
    """Write one entry of the router's audit log (inside the caller's transaction when `db` is a connection).

    `actor_id` is the acting dashboard account, `actor_key` the prefix of the acting API key; with neither the
    router acted itself (`system`), unless `actor_type` says otherwise (`anonymous`: a failed sign-in). `ip`
    is the client's address, truncated here. `metadata` holds ids, roles, regions, counts: never customer data.
    """
    kind = actor_type or ("admin" if actor_id is not None else "api" if actor_key else "system")
    await db.execute(
        """INSERT INTO audit_logs (id, project_id, actor_type, actor_user_id, actor_key_prefix, action, target_type,
                                   target_id, meta, ip_address)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        uuid7(), project_id, kind, actor_id, actor_key, action, target_type,
        None if target_id is None else str(target_id), metadata or {}, truncate_ip(ip))


_ENTRY = """SELECT id, actor_type, coalesce(actor_user_id::text, actor_key_prefix) AS actor_id, action, target_type,
                   target_id, meta, ip_address, created_at FROM audit_logs"""


async def _page(pool: asyncpg.Pool, scope: str, args: list[Any], filters: Filters,
                after: tuple[datetime, uuid.UUID] | None, size: int) -> list[AuditEntry]:
    """Up to `size` entries matching `scope` (SQL over `args`) and the filters, newest first after `after`."""
    clauses, params = [scope], list(args)

    def add(sql: str, value: Any) -> None:
        if value is not None:
            params.append(value)
            clauses.append(sql.replace("{}", f"${len(params)}"))

    add("action = {}", filters.action)
    add("actor_type = {}", filters.actor_type)
    add("coalesce(actor_user_id::text, actor_key_prefix) = {}", filters.actor_id)
    add("target_type = {}", filters.target_type)
    add("target_id = {}", filters.target_id)
    add("created_at > {}", filters.created_after)
    add("created_at < {}", filters.created_before)
    if after is not None:
        params.extend(after)
        clauses.append(f"(created_at, id) < (${len(params) - 1}, ${len(params)})")
    params.append(size)
    rows = await pool.fetch(f"{_ENTRY} WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, id DESC"
                            f" LIMIT ${len(params)}", *params)
    return [msgspec.convert({**dict(r), "source": "router"}, AuditEntry) for r in rows]


async def for_project(pool: asyncpg.Pool, project_id: uuid.UUID, filters: Filters,
                      after: tuple[datetime, uuid.UUID] | None, size: int) -> list[AuditEntry]:
    """The router's entries about one project (up to `size`)."""
    return await _page(pool, "project_id = $1", [project_id], filters, after, size)


async def for_account(pool: asyncpg.Pool, user_id: uuid.UUID, filters: Filters,
                      after: tuple[datetime, uuid.UUID] | None, size: int) -> AuditPage:
    """An account's own events: what it did, and what was done to it (sign-ins that failed included)."""
    rows = await _page(pool, "(actor_user_id = $1 OR (target_type = 'admin_user' AND target_id = $2))",
                       [user_id, str(user_id)], filters, after, size + 1)
    return merge([rows], size, more=False)


def merge(sources: list[list[AuditEntry]], size: int, *, more: bool) -> AuditPage:
    """One newest-first page out of lists each sorted newest first and each holding at least the `size` first
    entries of its source after the cursor (or all of them); `more` says a source has entries beyond its list.

    The page is the `size` newest of them all; its cursor, the position after its last entry, is exact for
    every source, because all are ordered by (created_at, id)."""
    merged = sorted((e for entries in sources for e in entries), key=lambda e: (e.created_at, e.id), reverse=True)
    page = merged[:size]
    more = more or len(merged) > size
    return AuditPage(page, encode_cursor(page[-1].created_at, page[-1].id) if more and page else None)
