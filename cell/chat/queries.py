"""SQL for conversations and their messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from cell.interactions.queries import Filters

COLUMNS = """id, project_id, user_id, session_id, status, subject, assignee_id, last_message_at, message_count,
    created_at, updated_at"""
MESSAGE_COLUMNS = "id, conversation_id, direction, body, author_id, created_at, read_at"
# The list's sort keys; last_message_at is set with the first message, the fallback only guards old rows.
SORT_KEYS = {"last_message_at": "coalesce(last_message_at, created_at)", "created_at": "created_at"}


async def insert(conn: asyncpg.Connection, conversation_id: uuid.UUID, project_id: uuid.UUID,
                 user_id: uuid.UUID | None, session_id: uuid.UUID, subject: str | None) -> asyncpg.Record | None:
    """Open a conversation already counting its first message; None when the id exists (a retry)."""
    return await conn.fetchrow(
        f"""INSERT INTO conversations (id, project_id, user_id, session_id, subject, last_message_at, message_count)
            VALUES ($1, $2, $3, $4, $5, now(), 1) ON CONFLICT DO NOTHING RETURNING {COLUMNS}""",
        conversation_id, project_id, user_id, session_id, subject,
    )


async def get(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
              conversation_id: uuid.UUID) -> asyncpg.Record | None:
    """One conversation of the project."""
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM conversations WHERE project_id = $1 AND id = $2",
                               project_id, conversation_id)


async def page(pool: asyncpg.Pool, filters: Filters, sort: str, after: tuple[datetime, uuid.UUID] | None,
               limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 conversations, most recent first by `sort`, strictly after the cursor position."""
    key = SORT_KEYS[sort]
    if after is not None:
        filters.params.extend(after)
        n = len(filters.params)
        filters.clauses.append(f"({key}, id) < (${n - 1}, ${n})")
    filters.params.append(limit + 1)
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {COLUMNS} FROM conversations WHERE {filters.where()}
             ORDER BY {key} DESC, id DESC LIMIT ${len(filters.params)}""", *filters.params)
    return rows


async def update(conn: asyncpg.Connection, project_id: uuid.UUID, conversation_id: uuid.UUID,
                 changes: dict[str, Any]) -> asyncpg.Record | None:
    """Apply the changed fields (names come from the patch type, never from the client)."""
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
    return await conn.fetchrow(
        f"""UPDATE conversations SET {sets}, updated_at = now() WHERE project_id = $1 AND id = $2
            RETURNING {COLUMNS}""",
        project_id, conversation_id, *changes.values(),
    )


async def count_message(conn: asyncpg.Connection, project_id: uuid.UUID, conversation_id: uuid.UUID, *,
                        reopen: bool) -> bool:
    """Count a message about to be inserted in this transaction (the row lock keeps the count exact);
    an end user's message reopens a closed conversation. False when there is no such conversation."""
    counted = await conn.fetchval(
        """UPDATE conversations
              SET message_count = message_count + 1, last_message_at = greatest(last_message_at, now()),
                  updated_at = now(), status = CASE WHEN $3 THEN 'open' ELSE status END
            WHERE project_id = $1 AND id = $2 RETURNING id""",
        project_id, conversation_id, reopen,
    )
    return counted is not None


async def insert_message(conn: asyncpg.Connection, message_id: uuid.UUID, project_id: uuid.UUID,
                         conversation_id: uuid.UUID, direction: str, body: str, author_id: uuid.UUID | None,
                         meta: dict[str, Any]) -> asyncpg.Record | None:
    """Store a message unless its id exists; None when it did (an idempotent retry)."""
    return await conn.fetchrow(
        f"""INSERT INTO messages (id, project_id, conversation_id, direction, body, author_id, meta)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING {MESSAGE_COLUMNS}""",
        message_id, project_id, conversation_id, direction, body, author_id, meta,
    )


async def get_message(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID, conversation_id: uuid.UUID,
                      message_id: uuid.UUID) -> asyncpg.Record | None:
    """One message of one conversation."""
    return await conn.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE project_id = $1 AND conversation_id = $2 AND id = $3",
        project_id, conversation_id, message_id)


async def page_messages(pool: asyncpg.Pool, project_id: uuid.UUID, conversation_id: uuid.UUID,
                        after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 messages in the order they were written, strictly after the cursor position
    (a chat reads top to bottom, and a client polls forward from its last cursor)."""
    params: list[Any] = [project_id, conversation_id]
    where = "project_id = $1 AND conversation_id = $2"
    if after is not None:
        params.extend(after)
        where += " AND (created_at, id) > ($3, $4)"
    params.append(limit + 1)
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {MESSAGE_COLUMNS} FROM messages WHERE {where}
             ORDER BY created_at, id LIMIT ${len(params)}""", *params)
    return rows


async def mark_read(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID, conversation_id: uuid.UUID,
                    direction: str, ids: list[uuid.UUID] | None = None) -> dict[uuid.UUID, datetime]:
    """Mark the unread messages of one direction read (only `ids` when given): read receipts."""
    rows = await conn.fetch(
        """UPDATE messages SET read_at = now()
            WHERE project_id = $1 AND conversation_id = $2 AND direction = $3 AND read_at IS NULL
              AND ($4::uuid[] IS NULL OR id = ANY($4))
            RETURNING id, read_at""",
        project_id, conversation_id, direction, ids,
    )
    return {r["id"]: r["read_at"] for r in rows}
