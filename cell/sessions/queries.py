"""SQL for sessions, and the keyed hash that stands in for the client IP."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from cell import users
from cell.interactions import queries as interactions
from cell.interactions.queries import Filters
from cell.privacy import scrub
from cell.users import EndUserIn

COLUMNS = """id, project_id, user_id, started_at, last_seen_at, device, app_version, environment,
    user_agent, ip_hash, page_views, interaction_count, privacy_scope"""


def ip_hash(secret: bytes, ip: str | None) -> str | None:
    """HMAC-SHA256 of the client IP under the project's secret: stable within a project, unlinkable across
    projects, and not reversible by enumerating the IPv4 space without the secret."""
    if not ip:
        return None
    return hmac.new(secret, ip.encode(), hashlib.sha256).hexdigest()


async def upsert(conn: asyncpg.Connection, row: dict[str, Any]) -> asyncpg.Record | None:
    """Create the session with one page view, or count one more on the existing one (atomically, so
    concurrent posts count exactly); None when the id belongs to another project.

    Fields sent again replace the stored ones, `device` is merged, `privacy_scope` (what the privacy rules
    redacted from the user agent and device) adds up, and a session that was anonymous
    takes the user who identified in it (it never changes hands from one user to another).
    """
    # Sessions are unique on `id` and on `(project_id, id)`; two first posts of one session at once can
    # collide on the second, which ON CONFLICT (id) does not arbitrate: retry once, the row then exists.
    for attempt in (1, 2):
        try:
            async with conn.transaction():  # a savepoint: the retry runs in the caller's transaction
                return await _upsert(conn, row)
        except asyncpg.UniqueViolationError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _upsert(conn: asyncpg.Connection, row: dict[str, Any]) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""INSERT INTO sessions AS s (id, project_id, user_id, device, app_version, environment, ip_hash,
                                       user_agent, page_views, privacy_scope)
            VALUES ($1, $2, $3, coalesce($4, '{{}}'::jsonb), $5, $6, $7, $8, 1, $9)
            ON CONFLICT (id) DO UPDATE SET
                last_seen_at = now(),
                page_views = s.page_views + 1,
                user_id = coalesce(s.user_id, EXCLUDED.user_id),
                device = s.device || EXCLUDED.device,
                app_version = coalesce(EXCLUDED.app_version, s.app_version),
                environment = coalesce(EXCLUDED.environment, s.environment),
                ip_hash = coalesce(EXCLUDED.ip_hash, s.ip_hash),
                user_agent = coalesce(EXCLUDED.user_agent, s.user_agent),
                privacy_scope = relay_merge_redactions(s.privacy_scope, EXCLUDED.privacy_scope)
            WHERE s.project_id = EXCLUDED.project_id
            RETURNING {COLUMNS}, (xmax = 0) AS inserted""",
        row["id"], row["project_id"], row["user_id"], row["device"], row["app_version"], row["environment"],
        row["ip_hash"], row["user_agent"], row.get("privacy_scope"),
    )


async def get(pool: asyncpg.Pool, project_id: uuid.UUID, session_id: uuid.UUID) -> asyncpg.Record | None:
    """One session of the project."""
    return await pool.fetchrow(
        f"SELECT {COLUMNS} FROM sessions WHERE project_id = $1 AND id = $2", project_id, session_id,
    )


async def page(pool: asyncpg.Pool, filters: Filters, after: tuple[datetime, uuid.UUID] | None,
               limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 sessions, most recently started first, strictly after the cursor position."""
    if after is not None:
        filters.params.extend(after)
        n = len(filters.params)
        filters.clauses.append(f"(started_at, id) < (${n - 1}, ${n})")
    filters.params.append(limit + 1)
    sql = (f"SELECT {COLUMNS} FROM sessions WHERE {filters.where()}"
           f" ORDER BY started_at DESC, id DESC LIMIT ${len(filters.params)}")
    rows: list[asyncpg.Record] = await pool.fetch(sql, *filters.params)
    return rows


async def identify(conn: asyncpg.Connection, project_id: uuid.UUID, session_id: uuid.UUID,
                   user: EndUserIn | None, secret_key: str, rules: scrub.Rules) -> tuple[uuid.UUID | None, bool]:
    """The end user acting in this session: the one sent (verified and upserted, and tied to the session if
    it had none), else the one the session already belongs to; and whether "once per person" may count by
    them (`cell.users.Claim.countable`). Chat and surveys attribute their interactions with it, so a
    person's erasure sees everything they did."""
    ref = await users.upsert(conn, project_id, user, secret_key, rules) if user else None
    await interactions.ensure_session(conn, project_id, session_id, ref.id if ref else None)
    if ref is not None:
        return ref.id, ref.claim.countable
    owner: uuid.UUID | None = await conn.fetchval(
        "SELECT user_id FROM sessions WHERE project_id = $1 AND id = $2", project_id, session_id)
    return owner, owner is not None and await users.countable(conn, project_id, owner)
