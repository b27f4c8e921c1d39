"""SQL for interactions and their logs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

COLUMNS = """id, project_id, type, source, status, severity, tags, assignee_id, user_id, session_id,
    content_json AS content, technical_context, linked_issue_provider, linked_issue_id, linked_issue_url,
    ai_summary, ai_labels, ai_duplicate_group_id, ai_confidence, ai_method, duplicate_confirmed, privacy_scope,
    created_at, updated_at"""


def content_text(content: dict[str, Any]) -> str | None:
    """The user's words as one searchable text: `text`, else title, description and steps."""
    if isinstance(content.get("text"), str):
        return str(content["text"])
    parts = [content.get(k) for k in ("title", "description", "steps")]
    words = [p if isinstance(p, str) else " ".join(map(str, p)) if isinstance(p, list) else None for p in parts]
    joined = "\n".join(w for w in words if w)
    return joined or None


async def insert(conn: asyncpg.Connection, row: dict[str, Any]) -> asyncpg.Record | None:
    """Insert an interaction unless its id exists; None when it did (an idempotent retry).

    `privacy_scope` is the redaction report of the privacy rules (which rule, how many), if any.
    """
    return await conn.fetchrow(
        f"""INSERT INTO interactions (id, project_id, type, source, user_id, session_id, content_text,
                                      content_json, severity, tags, technical_context, privacy_scope)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, '{{}}'::text[]),
                    coalesce($11, '{{}}'::jsonb), coalesce($12, '{{}}'::jsonb))
            ON CONFLICT DO NOTHING
            RETURNING {COLUMNS}""",
        row["id"], row["project_id"], row["type"], row["source"], row["user_id"], row["session_id"],
        row["content_text"], row["content"], row["severity"], row["tags"], row["technical_context"],
        row.get("privacy_scope"),
    )


async def insert_logs(conn: asyncpg.Connection, log_id: uuid.UUID, project_id: uuid.UUID,
                      interaction_id: uuid.UUID, console: Any, network: Any, errors: Any) -> None:
    """Store the logs sent with an interaction."""
    await conn.execute(
        """INSERT INTO interaction_logs (id, project_id, interaction_id, console, network, errors)
           VALUES ($1, $2, $3, coalesce($4, '[]'::jsonb), coalesce($5, '[]'::jsonb), coalesce($6, '[]'::jsonb))""",
        log_id, project_id, interaction_id, console, network, errors,
    )


async def ensure_session(conn: asyncpg.Connection, project_id: uuid.UUID, session_id: uuid.UUID,
                         user_id: uuid.UUID | None) -> None:
    """Create the session row if the SDK has not registered it yet (an interaction may arrive first).

    `ON CONFLICT DO NOTHING` without a target: sessions are unique on `id` and on `(project_id, id)`, and
    two requests creating one new session at once may collide on either. A session of another project
    is left alone (the interaction's foreign key then refuses it).
    """
    await conn.execute(
        "INSERT INTO sessions (id, project_id, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        session_id, project_id, user_id,
    )
    if user_id is not None:
        await conn.execute(
            "UPDATE sessions SET user_id = $3 WHERE project_id = $1 AND id = $2 AND user_id IS NULL",
            project_id, session_id, user_id,
        )


async def count_on_session(conn: asyncpg.Connection, project_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """Count a newly stored interaction on its session."""
    await conn.execute(
        """UPDATE sessions SET interaction_count = interaction_count + 1, last_seen_at = now()
            WHERE project_id = $1 AND id = $2""", project_id, session_id,
    )


# Set-based forms of the writes above, for the group commit of ingest (cell/interactions/writer.py): one
# statement per table for a whole batch, its rows passed as one JSON array.

_ROW = """id uuid, project_id uuid, type interaction_type, source interaction_source, user_id uuid, session_id uuid,
    content_text text, content jsonb, severity severity, tags text[], technical_context jsonb, privacy_scope jsonb"""


async def taken(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these interaction ids are already stored, in any project."""
    rows = await conn.fetch("SELECT id FROM interactions WHERE id = ANY($1::uuid[])", ids)
    return {r["id"] for r in rows}


async def session_projects(conn: asyncpg.Connection, session_ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The project of each of these sessions that exists."""
    rows = await conn.fetch("SELECT id, project_id FROM sessions WHERE id = ANY($1::uuid[])", session_ids)
    return {r["id"]: r["project_id"] for r in rows}


async def insert_many(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> list[asyncpg.Record]:
    """`insert` for many rows at once: the rows stored, without those whose id exists."""
    stored: list[asyncpg.Record] = await conn.fetch(
        f"""INSERT INTO interactions (id, project_id, type, source, user_id, session_id, content_text,
                                      content_json, severity, tags, technical_context, privacy_scope)
            SELECT id, project_id, type, source, user_id, session_id, content_text, content, severity,
                   coalesce(tags, '{{}}'::text[]), coalesce(technical_context, '{{}}'::jsonb),
                   coalesce(privacy_scope, '{{}}'::jsonb)
              FROM jsonb_to_recordset($1::jsonb) AS r({_ROW})
            ON CONFLICT DO NOTHING
            RETURNING {COLUMNS}""",
        rows,
    )
    return stored


async def insert_logs_many(conn: asyncpg.Connection, logs: list[dict[str, Any]]) -> None:
    """`insert_logs` for many interactions: dicts of id, project_id, interaction_id, console, network, errors."""
    await conn.execute(
        """INSERT INTO interaction_logs (id, project_id, interaction_id, console, network, errors)
           SELECT id, project_id, interaction_id, coalesce(console, '[]'::jsonb), coalesce(network, '[]'::jsonb),
                  coalesce(errors, '[]'::jsonb)
             FROM jsonb_to_recordset($1::jsonb)
                  AS r(id uuid, project_id uuid, interaction_id uuid, console jsonb, network jsonb, errors jsonb)""",
        logs,
    )


async def ensure_sessions(conn: asyncpg.Connection, sessions: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None]]
                          ) -> None:
    """`ensure_session` for many (project_id, session_id, user_id), then lock them all, in id order (the lock
    `count_on_sessions` takes anyway, which foreign-key checks of other writers do not wait for).

    The lock order (by id, after the end users) keeps concurrent batches from deadlocking on sessions they
    share, and matches erasure's (user, then sessions). A session of another project is left alone.
    """
    first: dict[uuid.UUID, dict[str, Any]] = {}
    for project_id, session_id, user_id in sessions:  # the first user to arrive is the one kept, as one by one
        entry = first.setdefault(session_id, {"id": session_id, "project_id": project_id, "user_id": None})
        if entry["user_id"] is None:
            entry["user_id"] = user_id
    rows = sorted(first.values(), key=lambda r: r["id"])
    await conn.execute(
        """INSERT INTO sessions (id, project_id, user_id)
           SELECT id, project_id, user_id
             FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, project_id uuid, user_id uuid)
            ORDER BY id
           ON CONFLICT DO NOTHING""",
        rows,
    )
    await conn.execute(
        """SELECT 1 FROM sessions s JOIN jsonb_to_recordset($1::jsonb) AS r(id uuid, project_id uuid)
               ON s.id = r.id AND s.project_id = r.project_id
            ORDER BY s.id FOR NO KEY UPDATE OF s""",
        rows,
    )


async def count_on_sessions(conn: asyncpg.Connection,
                            stored: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None]]) -> None:
    """Count newly stored interactions (project_id, session_id, user_id) on their sessions; an anonymous session
    takes the first user who sent one, as `ensure_session` does."""
    counts: dict[uuid.UUID, dict[str, Any]] = {}
    for project_id, session_id, user_id in stored:
        entry = counts.setdefault(session_id, {"id": session_id, "project_id": project_id, "user_id": None, "n": 0})
        entry["n"] += 1
        if entry["user_id"] is None:
            entry["user_id"] = user_id
    await conn.execute(
        """UPDATE sessions s SET interaction_count = s.interaction_count + r.n, last_seen_at = now(),
                                 user_id = coalesce(s.user_id, r.user_id)
             FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, project_id uuid, user_id uuid, n int)
            WHERE s.project_id = r.project_id AND s.id = r.id""",
        list(counts.values()),
    )


async def get_many(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
    """Interactions by id, whatever their project (the caller checks it)."""
    rows = await pool.fetch(f"SELECT {COLUMNS} FROM interactions WHERE id = ANY($1::uuid[])", ids)
    return {r["id"]: r for r in rows}


async def get(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
              interaction_id: uuid.UUID) -> asyncpg.Record | None:
    """One interaction of the project."""
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM interactions WHERE project_id = $1 AND id = $2", project_id, interaction_id,
    )


async def get_logs(pool: asyncpg.Pool, project_id: uuid.UUID, interaction_id: uuid.UUID) -> asyncpg.Record | None:
    """The logs sent with one interaction (ingest stores one row per interaction)."""
    return await pool.fetchrow(
        """SELECT console, network, errors FROM interaction_logs
            WHERE project_id = $1 AND interaction_id = $2 ORDER BY created_at LIMIT 1""",
        project_id, interaction_id,
    )


class Filters:
    """The list filters of `GET interactions`, turned into a WHERE clause with numbered parameters."""

    def __init__(self, project_id: uuid.UUID) -> None:
        self.clauses = ["project_id = $1"]
        self.params: list[Any] = [project_id]

    def add(self, sql: str, value: Any) -> None:
        """Add `sql` with `{}` standing for the next parameter, unless value is None."""
        if value is None:
            return
        self.clauses.append(sql.format(self.param(value)))

    def param(self, value: Any) -> str:
        """Bind `value` as the next parameter; its placeholder (`$n`) for SQL built around the filters."""
        self.params.append(value)
        return f"${len(self.params)}"

    def after(self, position: tuple[datetime, uuid.UUID] | None) -> None:
        """Keep only rows strictly after `position` in newest-first order (a keyset cursor)."""
        if position is not None:
            self.clauses.append(f"(created_at, id) < ({self.param(position[0])}, {self.param(position[1])})")

    def copy(self) -> Filters:
        """The same filters, to extend for one query without changing these."""
        other = Filters.__new__(Filters)
        other.clauses, other.params = list(self.clauses), list(self.params)
        return other

    def where(self) -> str:
        return " AND ".join(self.clauses)


async def page(pool: asyncpg.Pool, filters: Filters, after: tuple[datetime, uuid.UUID] | None,
               limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 interactions, newest first, strictly after the cursor position."""
    f = filters.copy()
    f.after(after)
    n = f.param(limit + 1)
    sql = f"SELECT {COLUMNS} FROM interactions WHERE {f.where()} ORDER BY created_at DESC, id DESC LIMIT {n}"
    rows: list[asyncpg.Record] = await pool.fetch(sql, *f.params)
    return rows


STATUS_COUNT_CAP = 1000
"""Counts per status stop here (the dashboard shows "1000+"): an exact count of a million rows would cost
more than the page it sits on, and nobody triages by the last digit. Up to the cap a count is exact and
current: the inbox reads it with every page (under a millisecond at a million rows: 5 index-only ranges)."""


async def status_counts(pool: asyncpg.Pool, project_id: uuid.UUID) -> dict[str, int]:
    """How many interactions the project has in each status, each capped at `STATUS_COUNT_CAP` (one index
    range per status, read up to the cap)."""
    rows = await pool.fetch(
        """SELECT s.status::text AS status,
                  (SELECT count(*) FROM (SELECT 1 FROM interactions i
                                          WHERE i.project_id = $1 AND i.status = s.status LIMIT $2) capped) AS n
             FROM unnest(enum_range(NULL::interaction_status)) AS s(status)""",
        project_id, STATUS_COUNT_CAP,
    )
    return {r["status"]: r["n"] for r in rows}
