"""SQL for replays and their chunk index (`replays.chunks`); chunk bytes live in the object store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from cell.interactions.queries import Filters, ensure_session

COLUMNS = """id, session_id, interaction_id, status, event_count, duration, started_at, ended_at,
    jsonb_array_length(chunks) AS chunk_count, created_at, failure_reason, privacy_scope"""


async def lock(conn: asyncpg.Connection, project_id: uuid.UUID, replay_id: uuid.UUID) -> asyncpg.Record | None:
    """The project's replay, locked until the transaction ends (chunk appends and finish take turns)."""
    return await conn.fetchrow(
        """SELECT id, session_id, status, chunks FROM replays WHERE project_id = $1 AND id = $2 FOR UPDATE""",
        project_id, replay_id,
    )


async def lock_or_create(conn: asyncpg.Connection, project_id: uuid.UUID, replay_id: uuid.UUID,
                         session_id: uuid.UUID) -> asyncpg.Record | None:
    """Lock the replay, creating it (and its session) on its first chunk; None if the id is another project's.

    A session id of another project fails the foreign key (ForeignKeyViolationError).
    """
    row = await lock(conn, project_id, replay_id)
    if row is not None:
        return row
    await ensure_session(conn, project_id, session_id, None)
    await conn.execute(
        "INSERT INTO replays (id, project_id, session_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        replay_id, project_id, session_id,
    )
    return await lock(conn, project_id, replay_id)


async def attach(conn: asyncpg.Connection, project_id: uuid.UUID, replay_id: uuid.UUID,
                 interaction_id: uuid.UUID) -> None:
    """Point the replay at the interaction it illustrates, unless it already points somewhere."""
    await conn.execute(
        """UPDATE replays SET interaction_id = coalesce(interaction_id, $3) WHERE project_id = $1 AND id = $2""",
        project_id, replay_id, interaction_id,
    )


def _at(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _figures(chunks: list[dict[str, Any]]) -> tuple[int, float, float]:
    """Event count, first and last event time (ms) of a non-empty chunk index."""
    count = sum(int(c["eventCount"]) for c in chunks)
    start = min(float(c["startTime"]) for c in chunks)
    end = max(float(c["endTime"]) for c in chunks)
    return count, start, end


async def set_chunks(conn: asyncpg.Connection, project_id: uuid.UUID, replay_id: uuid.UUID,
                     chunks: list[dict[str, Any]]) -> None:
    """Write the whole chunk index (in index order) and the figures it implies, under the row lock.

    It also restarts the idle clock: a replay whose SDK keeps sending is never closed by the timeout.
    """
    count, start, end = _figures(chunks)
    await conn.execute(
        """UPDATE replays SET chunks = $3, event_count = $4, started_at = $5, ended_at = $6, duration = $7,
                  last_chunk_at = now()
            WHERE project_id = $1 AND id = $2""",
        project_id, replay_id, chunks, count, _at(start), _at(end), round(end - start),
    )


async def add_redactions(conn: asyncpg.Connection, project_id: uuid.UUID, replay_id: uuid.UUID,
                         redactions: dict[str, Any]) -> None:
    """Add a chunk's redaction report (`Report.as_json`) to the replay's record of what was redacted."""
    await conn.execute(
        """UPDATE replays SET privacy_scope = relay_merge_redactions(privacy_scope, $3)
            WHERE project_id = $1 AND id = $2""", project_id, replay_id, redactions)


async def set_status(conn: asyncpg.Connection, project_id: uuid.UUID, replay_id: uuid.UUID, status: str) -> None:
    """Move the replay along `recording → processing → ready | failed`."""
    await conn.execute("UPDATE replays SET status = $3 WHERE project_id = $1 AND id = $2",
                       project_id, replay_id, status)


async def mark_ready(conn: asyncpg.Connection, project_id: uuid.UUID, replay_id: uuid.UUID,
                     chunks: list[dict[str, Any]]) -> None:
    """Processing checked every chunk: store the index and the figures as the objects themselves say."""
    count, start, end = _figures(chunks)
    await conn.execute(
        """UPDATE replays SET status = 'ready', chunks = $3, event_count = $4, started_at = $5, ended_at = $6,
                  duration = $7, processed_at = now(), failure_reason = NULL
            WHERE project_id = $1 AND id = $2""",
        project_id, replay_id, chunks, count, _at(start), _at(end), round(end - start))


async def mark_failed(conn: asyncpg.Connection, project_id: uuid.UUID, replay_id: uuid.UUID, reason: str) -> None:
    """Processing gave up on the replay; the reason is for the people who wanted to watch it."""
    await conn.execute(
        """UPDATE replays SET status = 'failed', processed_at = now(), failure_reason = $3
            WHERE project_id = $1 AND id = $2""", project_id, replay_id, reason)


async def lock_processing(conn: asyncpg.Connection, replay_id: uuid.UUID) -> asyncpg.Record | None:
    """The replay, locked, if it is still waiting for processing (any other state: leave it alone)."""
    return await conn.fetchrow(
        """SELECT project_id, chunks FROM replays WHERE id = $1 AND status = 'processing' FOR UPDATE""",
        replay_id)


async def close_idle(conn: asyncpg.Connection, idle_seconds: float, limit: int) -> list[asyncpg.Record]:
    """Move up to `limit` replays still recording with no chunk for `idle_seconds` to `processing`.

    Rows a chunk upload or `finish` holds are skipped (they are not idle); the status is
    re-checked on the locked row, so a replay finished meanwhile is not closed twice.
    """
    rows: list[asyncpg.Record] = await conn.fetch(
        """WITH idle AS (
               SELECT id FROM replays
                WHERE status = 'recording' AND last_chunk_at < now() - make_interval(secs => $1)
                ORDER BY last_chunk_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           UPDATE replays r SET status = 'processing' FROM idle WHERE r.id = idle.id
           RETURNING r.id, r.project_id""", float(idle_seconds), limit)
    return rows


async def get(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
              replay_id: uuid.UUID) -> asyncpg.Record | None:
    """One replay of the project with its chunk index."""
    return await conn.fetchrow(
        f"SELECT {COLUMNS}, chunks FROM replays WHERE project_id = $1 AND id = $2", project_id, replay_id,
    )


async def page(pool: asyncpg.Pool, filters: Filters, after: tuple[datetime, uuid.UUID] | None,
               limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 replays, newest first, strictly after the cursor position."""
    if after is not None:
        filters.params.extend(after)
        n = len(filters.params)
        filters.clauses.append(f"(created_at, id) < (${n - 1}, ${n})")
    filters.params.append(limit + 1)
    rows: list[asyncpg.Record] = await pool.fetch(
        f"SELECT {COLUMNS} FROM replays WHERE {filters.where()}"
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(filters.params)}",
        *filters.params,
    )
    return rows
