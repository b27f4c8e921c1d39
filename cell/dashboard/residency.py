"""The residency page, for the compliance officer: where the project lives, proved from this cell's stores.

It shows what `GET residency` shows (stores with rows and bytes, findings, the newest signed report), the
project's own recent audits as signed receipts, a "Verify chain" result computed here over the cell's whole
receipt chain (only the verdict is shown: other projects' reports stay unseen), "Run audit now" (the API's
audit, admin), the latest canary scans, the project's moves between regions, and the project's audit log with
filters and a CSV export (admins).

Moves are driven by the router (`GET …/move` there); what this cell knows of them is the project's state here
(a move out of this region under way: `copying`, then `fencing`, then `fenced`) and the `project.moved` entry
the target cell writes to the project's audit log when a move lands (from and to which region, by whom, the
move's id), which travels with the project on later moves. Both are shown read-only to every member (the
compliance officer may be a viewer); who requested a move (a team member's id) only to admins, as the log.
Canary scans (`relay residency canary scan`) record each project's result in its home cell
(`canary_results`, migration 0025): the newest are shown to every member.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime
from typing import Any, get_args

import asyncpg
import msgspec
from litestar import Request, Response, get, post
from litestar.response import Redirect, Template

from cell.audit import routes as audit_routes
from cell.auth import ADMIN, require
from cell.context import ctx
from cell.dashboard.desk import choice, desk, form_of, page
from cell.residency import receipts
from cell.residency import routes as residency
from cell.residency.types import AuditIn
from common.problems import Problem
from common.web import SECURITY_HEADERS

RECENT_AUDITS = 10
MOVES_SHOWN = 20
CANARIES_SHOWN = 5
MOVE_STEPS = ("copying", "fencing", "fenced")
"""A move out of this region, in order: rows copied while served, writes drained, writes refused (the flip)."""
LOG_PAGE = 50
CSV_MAX_ROWS = 10_000
"""Rows of one CSV export (200 per query, as the API pages): a year of a busy project's changes."""


def _when(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise Problem(400, f"{name} is not a date or time (ISO 8601)") from None


async def _log_page(request: Request[Any, Any, Any], project_id: uuid.UUID, filters: dict[str, str],
                    cursor: str | None, limit: int) -> Any:
    """One page of the audit log through the API's own handler (admin only, as there)."""
    return await audit_routes.list_audit_logs.fn(
        request, project_id, action=filters["action"] or None,
        actor_type=choice(filters["actor_type"], audit_routes.ActorType, "actor_type"),
        actor_id=filters["actor_id"] or None, target_type=filters["target_type"] or None,
        target_id=filters["target_id"] or None, created_after=_when(filters["created_after"], "created_after"),
        created_before=_when(filters["created_before"], "created_before"), cursor=cursor, limit=limit)


def _filters(**given: str | None) -> dict[str, str]:
    return {k: (v or "").strip()[:255] for k, v in given.items()}


async def moves_of(pool: asyncpg.Pool, project_id: uuid.UUID) -> tuple[str, list[dict[str, Any]]]:
    """The project's state here (a move under way shows as one of `MOVE_STEPS`) and the moves that landed,
    newest first: the `project.moved` entries of its audit log (read by the index on the log's target)."""
    async with pool.acquire() as conn:
        state = await conn.fetchval("SELECT state FROM projects WHERE id = $1", project_id)
        rows = await conn.fetch(
            """SELECT created_at, actor_type::text AS actor_type, actor_id, meta FROM audit_logs
                WHERE project_id = $1 AND target_type = 'project' AND target_id = $1::text
                  AND action = 'project.moved'
                ORDER BY created_at DESC LIMIT $2""", project_id, MOVES_SHOWN)
    return str(state or "active"), [dict(r) for r in rows]


async def canaries_of(pool: asyncpg.Pool, project_id: uuid.UUID) -> list[dict[str, Any]]:
    """The project's newest canary scan results (`relay residency canary scan` records them), newest first."""
    rows = await pool.fetch(
        """SELECT scanned_at, planted_at, ok, markers, found_home, missing_slots, stores, breaches
             FROM canary_results WHERE project_id = $1 ORDER BY scanned_at DESC LIMIT $2""",
        project_id, CANARIES_SHOWN)
    return [dict(r) for r in rows]


@get("/app/projects/{project_id:uuid}/residency", include_in_schema=False)
async def residency_page(request: Request[Any, Any, Any], project_id: uuid.UUID, verify: str | None = None,
                         action: str | None = None, actor_type: str | None = None, actor_id: str | None = None,
                         target_type: str | None = None, target_id: str | None = None,
                         created_after: str | None = None, created_before: str | None = None,
                         cursor: str | None = None) -> Template:
    """Where the data is, the signed audits, the chain's verdict on request, and the audit log (admins)."""
    seen = await desk(request, project_id)
    where = await residency.get_residency.fn(request, project_id)
    pool = ctx(request).pool
    recent = await receipts.recent_for(pool, project_id, RECENT_AUDITS)
    verdict = receipts.verify_chain(await receipts.chain(pool), where.public_key) if verify else None
    filters = _filters(action=action, actor_type=actor_type, actor_id=actor_id, target_type=target_type,
                       target_id=target_id, created_after=created_after, created_before=created_before)
    log = await _log_page(request, project_id, filters, cursor or None, LOG_PAGE) if seen.is_admin else None
    state, moves = await moves_of(pool, project_id)
    active = {k: v for k, v in filters.items() if v}
    return page("residency.html", seen.context(
        "Residency", "residency", where=where, recent=recent, verdict=verdict, filters=filters, log=log,
        actor_types=get_args(audit_routes.ActorType), active=active, moves=moves, state=state,
        steps=MOVE_STEPS, canaries=await canaries_of(pool, project_id)))


@post("/app/projects/{project_id:uuid}/residency/audits", include_in_schema=False)
async def run_audit(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Redirect:
    """"Run audit now": the API's audit (admin), signed and chained; back to the page with the new receipt."""
    seen = await desk(request, project_id)
    await form_of(request, seen)
    principal = require(seen.principal, level=ADMIN)
    await residency.audit_now(request, principal, project_id, AuditIn().grace_seconds)
    return Redirect(f"/app/projects/{project_id}/residency?verify=1", status_code=303)


@get("/app/projects/{project_id:uuid}/residency/audit-log.csv", include_in_schema=False)
async def audit_csv(request: Request[Any, Any, Any], project_id: uuid.UUID, action: str | None = None,
                    actor_type: str | None = None, actor_id: str | None = None, target_type: str | None = None,
                    target_id: str | None = None, created_after: str | None = None,
                    created_before: str | None = None) -> Response[bytes]:
    """The audit log with the page's filters as CSV (admin), newest first, up to `CSV_MAX_ROWS` rows."""
    seen = await desk(request, project_id)
    require(seen.principal, level=ADMIN)
    filters = _filters(action=action, actor_type=actor_type, actor_id=actor_id, target_type=target_type,
                       target_id=target_id, created_after=created_after, created_before=created_before)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["created_at", "action", "actor_type", "actor_id", "target_type", "target_id", "ip_address",
                     "meta"])
    cursor: str | None = None
    written = 0
    while written < CSV_MAX_ROWS:
        batch = await _log_page(request, project_id, filters, cursor, 200)
        for e in batch.data:
            writer.writerow([_safe(v) for v in (e.created_at.isoformat(), e.action, e.actor_type, e.actor_id or "",
                                                 e.target_type or "", e.target_id or "", e.ip_address or "",
                                                 msgspec.json.encode(e.meta).decode())])
        written += len(batch.data)
        cursor = batch.next_cursor
        if cursor is None:
            break
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="audit-log-{project_id}.csv"'}
    return Response(out.getvalue().encode(), media_type="text/csv; charset=utf-8", headers=headers)


def _safe(text: str) -> str:
    """A cell a spreadsheet will not run as a formula (a leading =, +, -, @, tab or CR)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


ROUTES = [residency_page, run_audit, audit_csv]
