"""SQL for the feedback board: items, votes, links to interactions, and the counters they keep.

`vote_count` and `linked_interaction_count` change only in the transaction that
inserted or deleted the row they count, and only when it did: an `ON CONFLICT DO
NOTHING` that did nothing, or a delete that found nothing, leaves them alone, so
they stay exact under any number of concurrent votes, links and retries.

Both follow confirmed duplicate groups (cell/feedback/demand.py): an item counts
the interactions it reaches through its links and their confirmed groups, and its
votes include one group vote per end user who reported a reached, confirmed
interaction without voting themselves. So a link or an unlink recounts the item
under the project's grouping lock, and a vote or an un-vote by such an end user
trades their group vote for their own and back (the count moves by one at most,
never twice for one person).
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from cell.enrichment.queries import lock_project
from cell.feedback import demand
from cell.interactions.queries import Filters
from cell.paging import decode_cursor, encode_cursor
from common.ids import uuid7
from common.problems import Problem

COLUMNS = """id, project_id, title, description, status, category, vote_count, linked_interaction_count,
    created_by, created_at, updated_at"""
PUBLIC_COLUMNS = "id, title, description, status, category, vote_count, created_at"
VOTE_COLUMNS = "id, feedback_item_id, session_id, user_id, created_at"
LINK_COLUMNS = "id, feedback_item_id, interaction_id, created_at"
# Integration providers whose links are issues in a tracker.
ISSUE_PROVIDERS = ("linear", "jira", "github")


def encode_rank_cursor(rank: int, row_id: uuid.UUID) -> str:
    """A cursor positioned after the row (`rank`, `row_id`) of a list ordered by a number, then id."""
    raw = msgspec.json.encode([rank, str(row_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_rank_cursor(cursor: str) -> tuple[int, uuid.UUID]:
    """The position inside a rank cursor; anything else (a time cursor included) is a 422."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        rank, row_id = msgspec.json.decode(raw, type=tuple[int, str])
        return rank, uuid.UUID(row_id)
    except (ValueError, msgspec.DecodeError) as exc:
        raise Problem(422, "cursor is not valid") from exc


# Items ------------------------------------------------------------------------


async def get_item(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
                   item_id: uuid.UUID) -> asyncpg.Record | None:
    """One feedback item of the project."""
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM feedback_items WHERE project_id = $1 AND id = $2", project_id, item_id,
    )


async def page_items(pool: asyncpg.Pool, filters: Filters, *, by_votes: bool, after: str | None, limit: int,
                     columns: str = COLUMNS, voter: uuid.UUID | None = None) -> list[asyncpg.Record]:
    """Up to `limit` + 1 items after the cursor, most voted or newest first.

    With `voter` (a session id) each row also says whether that session voted for it.
    """
    if after is not None:
        if by_votes:
            filters.params.extend(decode_rank_cursor(after))
            order_key = "vote_count, id"
        else:
            filters.params.extend(decode_cursor(after))
            order_key = "created_at, id"
        n = len(filters.params)
        filters.clauses.append(f"({order_key}) < (${n - 1}, ${n})")
    select = columns
    if voter is not None:
        filters.params.append(voter)
        select += (", EXISTS (SELECT 1 FROM feedback_votes v WHERE v.feedback_item_id = feedback_items.id"
                   f" AND v.session_id = ${len(filters.params)}) AS voted")
    filters.params.append(limit + 1)
    order = "vote_count DESC, id DESC" if by_votes else "created_at DESC, id DESC"
    sql = (f"SELECT {select} FROM feedback_items WHERE {filters.where()}"
           f" ORDER BY {order} LIMIT ${len(filters.params)}")
    rows: list[asyncpg.Record] = await pool.fetch(sql, *filters.params)
    return rows


def next_cursor(rows: list[asyncpg.Record], limit: int, *, by_votes: bool) -> str | None:
    """The cursor after the last row shown, when a further row was fetched."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    if by_votes:
        return encode_rank_cursor(last["vote_count"], last["id"])
    return encode_cursor(last["created_at"], last["id"])


async def insert_item(conn: asyncpg.Connection, item_id: uuid.UUID, project_id: uuid.UUID, title: str,
                      description: str | None, status: str, category: str | None,
                      created_by: uuid.UUID | None) -> asyncpg.Record | None:
    """Insert an item unless its id exists; None when it did (an idempotent retry)."""
    return await conn.fetchrow(
        f"""INSERT INTO feedback_items (id, project_id, title, description, status, category, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT DO NOTHING
            RETURNING {COLUMNS}""",
        item_id, project_id, title, description, status, category, created_by,
    )


async def update_item(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID,
                      changes: dict[str, Any]) -> asyncpg.Record | None:
    """Apply `changes` (column → value, names from the PATCH type) to one item."""
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
    return await conn.fetchrow(
        f"UPDATE feedback_items SET {sets}, updated_at = now() WHERE project_id = $1 AND id = $2"
        f" RETURNING {COLUMNS}",
        project_id, item_id, *changes.values(),
    )


async def delete_item(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    """Delete an item with its votes and links, and uncount it on the roadmap items it was linked to.

    The item row is locked first, so a concurrent roadmap link either commits
    before (and is uncounted here) or fails on the vanished item afterwards.
    """
    found = await conn.fetchval(
        "SELECT id FROM feedback_items WHERE project_id = $1 AND id = $2 FOR UPDATE", project_id, item_id,
    )
    if found is None:
        return False
    await conn.execute(
        """UPDATE roadmap_items r SET linked_feedback_count = r.linked_feedback_count - 1
             FROM roadmap_feedback_links l
            WHERE l.project_id = $1 AND l.feedback_item_id = $2
              AND r.project_id = $1 AND r.id = l.roadmap_item_id""",
        project_id, item_id,
    )
    await conn.execute("DELETE FROM feedback_items WHERE project_id = $1 AND id = $2", project_id, item_id)
    return True


# Votes ------------------------------------------------------------------------


async def votable(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    """Whether end users may vote for this item: it exists here and is on the public board."""
    status = await conn.fetchval(
        "SELECT status FROM feedback_items WHERE project_id = $1 AND id = $2", project_id, item_id,
    )
    return status is not None and status != "wont_do"


async def add_vote(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID, session_id: uuid.UUID,
                   user_id: uuid.UUID | None, *, verified: bool = False) -> tuple[asyncpg.Record, int, bool]:
    """The session's (or verified person's) vote, the item's count after it, and whether this call cast it.

    UNIQUE (feedback_item_id, session_id), and for votes of verified end users the unique index on
    (feedback_item_id, user_id), make the second of two concurrent votes wait for the first and then insert
    nothing, so it counts nothing. An end user whose report the item reaches through a confirmed group already
    counts once (a group vote): their own vote replaces it, and the count stays. The item's row is locked
    first, so a merge's recount (`demand.sync`) either ran before or sees this vote.
    """
    verified = verified and user_id is not None
    await conn.execute("SELECT 1 FROM feedback_items WHERE project_id = $1 AND id = $2 FOR NO KEY UPDATE",
                       project_id, item_id)
    vote = await conn.fetchrow(
        f"""INSERT INTO feedback_votes (id, project_id, feedback_item_id, user_id, session_id, verified)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT DO NOTHING
            RETURNING {VOTE_COLUMNS}""",
        uuid7(), project_id, item_id, user_id, session_id, verified,
    )
    if vote is not None:
        replaced = 0
        if user_id is not None:
            replaced = await conn.fetchval(
                """WITH gone AS (DELETE FROM feedback_votes WHERE project_id = $1 AND feedback_item_id = $2
                                   AND user_id = $3 AND from_group RETURNING 1)
                   SELECT count(*) FROM gone""", project_id, item_id, user_id)
        count: int = await conn.fetchval(
            """UPDATE feedback_items SET vote_count = vote_count + 1 - $3
                WHERE project_id = $1 AND id = $2 RETURNING vote_count""", project_id, item_id, replaced,
        )
        return vote, count, True
    existing = await conn.fetchrow(
        f"""SELECT {VOTE_COLUMNS},
                   (SELECT vote_count FROM feedback_items WHERE project_id = $1 AND id = $2) AS vote_count
              FROM feedback_votes WHERE project_id = $1 AND feedback_item_id = $2 AND NOT from_group
               AND (session_id = $3 OR (verified AND $5 AND user_id = $4))
             ORDER BY session_id = $3 DESC LIMIT 1""",
        project_id, item_id, session_id, user_id, verified,
    )
    if existing is None:  # the conflicting vote was withdrawn between the two statements
        raise Problem(409, "this session's vote changed concurrently; try again")
    return existing, existing["vote_count"], False


async def remove_vote(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID,
                      session_id: uuid.UUID) -> int | None:
    """Withdraw the session's vote; the item's count afterwards, or None when there is no such item.

    When the voter still reports an interaction the item reaches through a confirmed group, and has no other
    vote of their own for it, their group vote comes back in its place: the count stays. The item's row is
    locked before the groups are read (see `add_vote`).
    """
    locked = await conn.fetchval(
        "SELECT vote_count FROM feedback_items WHERE project_id = $1 AND id = $2 FOR NO KEY UPDATE",
        project_id, item_id)
    if locked is None:
        return None
    removed = await conn.fetchrow(
        """DELETE FROM feedback_votes WHERE project_id = $1 AND feedback_item_id = $2 AND session_id = $3
              AND NOT from_group RETURNING id, user_id""", project_id, item_id, session_id,
    )
    if removed is None:
        count: int = locked
        return count
    restored = 0
    voter = removed["user_id"]
    if voter is not None and not await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM feedback_votes WHERE project_id = $1 AND feedback_item_id = $2
                                 AND user_id = $3)""", project_id, item_id, voter) \
            and await demand.wants(conn, project_id, item_id, voter):
        restored = await conn.fetchval(
            """WITH made AS (INSERT INTO feedback_votes (id, project_id, feedback_item_id, user_id, from_group)
                             VALUES ($1, $2, $3, $4, true) ON CONFLICT DO NOTHING RETURNING 1)
               SELECT count(*) FROM made""", uuid7(), project_id, item_id, voter)
    count = await conn.fetchval(
        """UPDATE feedback_items SET vote_count = vote_count - 1 + $3
            WHERE project_id = $1 AND id = $2 RETURNING vote_count""", project_id, item_id, restored,
    )
    return count


async def page_votes(pool: asyncpg.Pool, project_id: uuid.UUID, item_id: uuid.UUID,
                     after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 votes of one item, newest first."""
    return await _page_children(pool, "feedback_votes", VOTE_COLUMNS, project_id, item_id, after, limit)


# Links to interactions --------------------------------------------------------


async def link(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID, interaction_id: uuid.UUID, *,
               fresh: bool = False) -> tuple[asyncpg.Record, int, bool] | None:
    """Link an interaction to an item: the link, the item's count and whether this call made it.

    None when the item or the interaction is not the project's. That is checked
    first: the unique pair is tested before the foreign keys, so another
    project's existing link would otherwise answer as a conflict.

    A link can bring the interaction's confirmed group with it, so the item is recounted
    (`demand.sync`) under the project's grouping lock. `fresh`: the interaction was created
    in this transaction (a suggestion's words), so it is in no group yet and nobody else can
    see it: the link counts exactly one, without the lock.
    """
    if not fresh:
        await lock_project(conn, project_id)
    owned = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM feedback_items WHERE project_id = $1 AND id = $2)
              AND EXISTS (SELECT 1 FROM interactions WHERE project_id = $1 AND id = $3)""",
        project_id, item_id, interaction_id,
    )
    if not owned:
        return None
    try:
        async with conn.transaction():  # a savepoint: a refused link leaves the caller's transaction usable
            row = await conn.fetchrow(
                f"""INSERT INTO feedback_links (id, project_id, feedback_item_id, interaction_id)
                    VALUES ($1, $2, $3, $4)
                    ON CONFLICT (feedback_item_id, interaction_id) DO NOTHING
                    RETURNING {LINK_COLUMNS}""",
                uuid7(), project_id, item_id, interaction_id,
            )
    except asyncpg.ForeignKeyViolationError:
        return None
    if row is not None:
        if not fresh:
            await demand.sync(conn, project_id, [item_id])
            count: int = await conn.fetchval(
                "SELECT linked_interaction_count FROM feedback_items WHERE project_id = $1 AND id = $2",
                project_id, item_id)
            return row, count, True
        count = await conn.fetchval(
            """UPDATE feedback_items SET linked_interaction_count = linked_interaction_count + 1
                WHERE project_id = $1 AND id = $2 RETURNING linked_interaction_count""", project_id, item_id,
        )
        return row, count, True
    existing = await conn.fetchrow(
        f"""SELECT {LINK_COLUMNS},
                   (SELECT linked_interaction_count FROM feedback_items
                     WHERE project_id = $1 AND id = $2) AS linked_interaction_count
              FROM feedback_links WHERE project_id = $1 AND feedback_item_id = $2 AND interaction_id = $3""",
        project_id, item_id, interaction_id,
    )
    if existing is None:  # unlinked between the two statements
        raise Problem(409, "this link changed concurrently; try again")
    return existing, existing["linked_interaction_count"], False


async def unlink(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID,
                 interaction_id: uuid.UUID) -> int | None:
    """Remove a link; the item's count afterwards, or None when there was no such link. The item is recounted
    under the grouping lock: the link may have been all that reached a confirmed group, or one of several."""
    await lock_project(conn, project_id)
    removed = await conn.fetchval(
        """DELETE FROM feedback_links WHERE project_id = $1 AND feedback_item_id = $2 AND interaction_id = $3
           RETURNING id""", project_id, item_id, interaction_id,
    )
    if removed is None:
        return None
    await demand.sync(conn, project_id, [item_id])
    count: int = await conn.fetchval(
        "SELECT linked_interaction_count FROM feedback_items WHERE project_id = $1 AND id = $2",
        project_id, item_id)
    return count


async def page_links(pool: asyncpg.Pool, project_id: uuid.UUID, item_id: uuid.UUID,
                     after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 links of one item, newest first."""
    return await _page_children(pool, "feedback_links", LINK_COLUMNS, project_id, item_id, after, limit)


async def _page_children(pool: asyncpg.Pool, table: str, columns: str, project_id: uuid.UUID,
                         item_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None,
                         limit: int) -> list[asyncpg.Record]:
    params: list[Any] = [project_id, item_id]
    position = ""
    if after is not None:
        params.extend(after)
        position = " AND (created_at, id) < ($3, $4)"
    params.append(limit + 1)
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {columns} FROM {table} WHERE project_id = $1 AND feedback_item_id = $2{position}
             ORDER BY created_at DESC, id DESC LIMIT ${len(params)}""", *params,
    )
    return rows


async def interaction_links(pool: asyncpg.Pool, project_id: uuid.UUID,
                            interaction_id: uuid.UUID) -> tuple[list[asyncpg.Record], list[asyncpg.Record]] | None:
    """Feedback items and tracker issues linked to one interaction; None when it is not the project's.

    Issues come from integration_links and from the interaction's own
    linked_issue_* columns (the first issue it was filed as), without repeats.
    """
    async with pool.acquire() as conn:
        own = await conn.fetchrow(
            """SELECT linked_issue_provider::text AS provider, linked_issue_id AS external_id,
                      linked_issue_url AS external_url, NULL::timestamptz AS created_at
                 FROM interactions WHERE project_id = $1 AND id = $2""", project_id, interaction_id,
        )
        if own is None:
            return None
        feedback = await conn.fetch(
            """SELECT l.id, l.feedback_item_id, f.title, f.status, l.created_at
                 FROM feedback_links l
                 JOIN feedback_items f ON f.project_id = l.project_id AND f.id = l.feedback_item_id
                WHERE l.project_id = $1 AND l.interaction_id = $2
                ORDER BY l.created_at, l.id""", project_id, interaction_id,
        )
        issues = list(await conn.fetch(
            """SELECT provider::text, external_id, external_url, created_at FROM integration_links
                WHERE project_id = $1 AND internal_type = 'interaction' AND internal_id = $2
                  AND provider::text = ANY($3::text[])
                ORDER BY created_at, id""", project_id, interaction_id, list(ISSUE_PROVIDERS),
        ))
    if own["provider"] is not None and own["external_id"] is not None and not any(
            (i["provider"], i["external_id"]) == (own["provider"], own["external_id"]) for i in issues):
        issues.insert(0, own)
    return list(feedback), issues

