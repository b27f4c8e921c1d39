"""SQL for roadmap items, their order, and their links to feedback items.

`linked_feedback_count` changes only in the transaction that inserted or
deleted a roadmap_feedback_links row, and only when it did; deleting a feedback
item uncounts its links itself (see `cell.feedback.queries.delete_item`).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from cell.feedback.queries import decode_rank_cursor, encode_rank_cursor
from cell.interactions.queries import Filters
from common.ids import uuid7

COLUMNS = """id, project_id, title, description, visibility, status, sort_order, eta, linked_feedback_count,
    created_at, updated_at"""
PUBLIC_COLUMNS = "id, title, description, status, sort_order, eta"
LINK_COLUMNS = """l.id, l.roadmap_item_id, l.feedback_item_id, f.title, f.status, f.vote_count, l.created_at"""


async def get(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
              item_id: uuid.UUID) -> asyncpg.Record | None:
    """One roadmap item of the project."""
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM roadmap_items WHERE project_id = $1 AND id = $2", project_id, item_id,
    )


async def page(pool: asyncpg.Pool, filters: Filters, after: str | None, limit: int,
               columns: str = COLUMNS) -> list[asyncpg.Record]:
    """Up to `limit` + 1 items in roadmap order (sort_order, then id) after the cursor."""
    if after is not None:
        filters.params.extend(decode_rank_cursor(after))
        n = len(filters.params)
        filters.clauses.append(f"(sort_order, id) > (${n - 1}, ${n})")
    filters.params.append(limit + 1)
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {columns} FROM roadmap_items WHERE {filters.where()}
             ORDER BY sort_order, id LIMIT ${len(filters.params)}""", *filters.params,
    )
    return rows


def next_cursor(rows: list[asyncpg.Record], limit: int) -> str | None:
    """The cursor after the last row shown, when a further row was fetched."""
    if len(rows) <= limit:
        return None
    return encode_rank_cursor(rows[limit - 1]["sort_order"], rows[limit - 1]["id"])


async def insert(conn: asyncpg.Connection, item_id: uuid.UUID, project_id: uuid.UUID,
                 values: dict[str, Any]) -> asyncpg.Record:
    """A new item; without a sort_order it goes after the project's last one."""
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO roadmap_items (id, project_id, title, description, visibility, status, sort_order, eta)
            VALUES ($1, $2, $3, $4, $5, $6,
                    coalesce($7, (SELECT coalesce(max(sort_order) + 1, 0) FROM roadmap_items WHERE project_id = $2)),
                    $8)
            RETURNING {COLUMNS}""",
        item_id, project_id, values["title"], values["description"], values["visibility"], values["status"],
        values["sort_order"], values["eta"],
    )
    return row


async def update(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID,
                 changes: dict[str, Any]) -> asyncpg.Record | None:
    """Apply `changes` (column → value, names from the PATCH type) to one item."""
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
    return await conn.fetchrow(
        f"UPDATE roadmap_items SET {sets}, updated_at = now() WHERE project_id = $1 AND id = $2"
        f" RETURNING {COLUMNS}",
        project_id, item_id, *changes.values(),
    )


async def delete(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    """Delete an item (its feedback links go with it)."""
    found = await conn.fetchval(
        "DELETE FROM roadmap_items WHERE project_id = $1 AND id = $2 RETURNING id", project_id, item_id,
    )
    return found is not None


async def reorder(conn: asyncpg.Connection, project_id: uuid.UUID, ids: list[uuid.UUID]) -> list[asyncpg.Record] | None:
    """Number the project's items 0, 1, … with `ids` first in that order and the rest after, as they were.

    The project's items are locked first (in id order, so concurrent reorders
    queue instead of deadlocking); None, with nothing changed, when an id is not
    one of them.
    """
    locked = await conn.fetch(
        "SELECT id FROM roadmap_items WHERE project_id = $1 ORDER BY id FOR UPDATE", project_id,
    )
    if not set(ids) <= {r["id"] for r in locked}:
        return None
    await conn.execute(
        """WITH wanted AS (SELECT id, ord FROM unnest($2::uuid[]) WITH ORDINALITY AS t(id, ord)),
                ranked AS (SELECT r.id,
                                  (row_number() OVER (ORDER BY w.ord NULLS LAST, r.sort_order, r.id) - 1)::int AS pos
                             FROM roadmap_items r LEFT JOIN wanted w ON w.id = r.id
                            WHERE r.project_id = $1)
           UPDATE roadmap_items r SET sort_order = ranked.pos, updated_at = now()
             FROM ranked
            WHERE r.project_id = $1 AND r.id = ranked.id AND r.sort_order <> ranked.pos""",
        project_id, ids,
    )
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {COLUMNS} FROM roadmap_items WHERE project_id = $1 ORDER BY sort_order, id", project_id,
    )
    return rows


async def link_feedback(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID,
                        feedback_item_id: uuid.UUID) -> tuple[asyncpg.Record, int, bool] | None:
    """Link a feedback item: the link, the roadmap item's count, and whether this call made it.

    None when either item is not the project's. That is checked first: the
    unique pair is tested before the foreign keys, so another project's
    existing link would otherwise pass for this one.
    """
    owned = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM roadmap_items WHERE project_id = $1 AND id = $2)
              AND EXISTS (SELECT 1 FROM feedback_items WHERE project_id = $1 AND id = $3)""",
        project_id, item_id, feedback_item_id,
    )
    if not owned:
        return None
    try:
        async with conn.transaction():  # a savepoint: a refused link leaves the caller's transaction usable
            made = await conn.fetchval(
                """INSERT INTO roadmap_feedback_links (id, project_id, roadmap_item_id, feedback_item_id)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (roadmap_item_id, feedback_item_id) DO NOTHING
                   RETURNING id""",
                uuid7(), project_id, item_id, feedback_item_id,
            )
    except asyncpg.ForeignKeyViolationError:
        return None
    if made is not None:
        count: int = await conn.fetchval(
            """UPDATE roadmap_items SET linked_feedback_count = linked_feedback_count + 1
                WHERE project_id = $1 AND id = $2 RETURNING linked_feedback_count""", project_id, item_id,
        )
    else:
        count = await conn.fetchval(
            "SELECT linked_feedback_count FROM roadmap_items WHERE project_id = $1 AND id = $2",
            project_id, item_id,
        )
    row = await conn.fetchrow(
        f"""SELECT {LINK_COLUMNS} FROM roadmap_feedback_links l
              JOIN feedback_items f ON f.project_id = l.project_id AND f.id = l.feedback_item_id
             WHERE l.project_id = $1 AND l.roadmap_item_id = $2 AND l.feedback_item_id = $3""",
        project_id, item_id, feedback_item_id,
    )
    if row is None:  # unlinked between the statements
        return None
    return row, count, made is not None


async def unlink_feedback(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID,
                          feedback_item_id: uuid.UUID) -> int | None:
    """Remove a link; the roadmap item's count afterwards, or None when there was no such link."""
    removed = await conn.fetchval(
        """DELETE FROM roadmap_feedback_links
            WHERE project_id = $1 AND roadmap_item_id = $2 AND feedback_item_id = $3 RETURNING id""",
        project_id, item_id, feedback_item_id,
    )
    if removed is None:
        return None
    count: int = await conn.fetchval(
        """UPDATE roadmap_items SET linked_feedback_count = linked_feedback_count - 1
            WHERE project_id = $1 AND id = $2 RETURNING linked_feedback_count""", project_id, item_id,
    )
    return count


async def page_feedback(pool: asyncpg.Pool, project_id: uuid.UUID, item_id: uuid.UUID, after: str | None,
                        limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 feedback items a roadmap item answers, most voted first."""
    params: list[Any] = [project_id, item_id]
    position = ""
    if after is not None:
        params.extend(decode_rank_cursor(after))
        position = " AND (f.vote_count, f.id) < ($3, $4)"
    params.append(limit + 1)
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {LINK_COLUMNS} FROM roadmap_feedback_links l
              JOIN feedback_items f ON f.project_id = l.project_id AND f.id = l.feedback_item_id
             WHERE l.project_id = $1 AND l.roadmap_item_id = $2{position}
             ORDER BY f.vote_count DESC, f.id DESC LIMIT ${len(params)}""", *params,
    )
    return rows
