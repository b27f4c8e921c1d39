"""Full-text search over a project's interactions, newest first, fast at any size and any rarity.

Postgres plans `search @@ q ORDER BY created_at DESC LIMIT n` from a guess of how many rows match. For a
word it has no statistics for (most words: only the commonest few hundred are counted) it guesses a
fixed share, and then walks the project's newest-first index testing every row. That is right for a
common word — a page fills after a few hundred rows — and ruinous for a rare one: a word used once in a
million rows makes it read all million (1.8 s here). The other plan, the GIN index first and a sort of
what it finds, costs in proportion to the rows that match anywhere in the table: a millisecond for a
rare word, hundreds for a common one.

So the page is found by measuring instead of guessing. The newest `SAMPLE` rows (after the cursor, with
the other filters) are walked first: if they hold a page of matches, that is the answer, usually in a
millisecond. If not, the share of matches they held is the evidence: the expected cost of walking on
(the rows still needed divided by that share) is weighed against the expected cost of the GIN plan (that
share of the whole table), with per-row costs measured on this machine, and the cheaper runs. A walk
that still falls short is re-measured, a few rounds at most, before the GIN plan finishes the page.
Every step resumes strictly after the last row the previous one examined, so the rows returned are
exactly those the plain query returns, in the same order.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime

import asyncpg

from cell.interactions.queries import COLUMNS, Filters

SAMPLE = 1000
"""Rows walked before deciding: about 2 ms here, and a page of any word in more than 5% of rows."""
WALK_COST, GIN_COST = 2.0, 7.5
"""Microseconds per row: walking the newest-first index testing each row, and fetching a row the GIN
index found (a random heap read and the sort), measured over a million interactions on 2 vCPU."""
ROUNDS = 3
"""Walks at most, before the GIN plan finishes the page whatever the estimates say."""

QUERY = "websearch_to_tsquery('simple', {})"


async def page(pool: asyncpg.Pool, filters: Filters, q: str, after: tuple[datetime, uuid.UUID] | None,
               limit: int, *, sample: int = SAMPLE) -> list[asyncpg.Record]:
    """Up to `limit` + 1 interactions matching `q` and `filters`, newest first, strictly after `after`."""
    need = limit + 1
    found: list[asyncpg.Record] = []
    window = sample
    async with pool.acquire() as conn:
        indexable: bool | None = None
        for _ in range(ROUNDS):
            hits, edge = await walk(conn, filters, q, after, window, need - len(found))
            found += hits
            if len(found) >= need or edge is None:
                return found
            after = edge
            share, still = len(hits) / window, need - len(found)
            if indexable is None:
                empty, indexable = await conn.fetchrow(
                    f"SELECT numnode(t) = 0, querytree(t) <> 'T' FROM {QUERY.format('$1')} AS t", q)
                if empty:  # no words at all (only punctuation, say): nothing matches, no need to look
                    return found
            if indexable and (share == 0 or still / share * WALK_COST > share * await table_rows(conn) * GIN_COST):
                break
            window = math.ceil(still / share * 1.5) if share else window * 4
        found += await rest(conn, filters, q, after, need - len(found), gin=bool(indexable))
    return found


async def walk(conn: asyncpg.Connection, filters: Filters, q: str, after: tuple[datetime, uuid.UUID] | None,
               window: int, need: int) -> tuple[list[asyncpg.Record], tuple[datetime, uuid.UUID] | None]:
    """The matches among the next `window` rows (at most `need`), and the position of the window's last
    row when the window was full (None when the rows ran out first, so the matches are all there are).

    The window's last row is returned whether it matches or not (`row_number` marks it); the outer
    LIMIT lets Postgres stop walking as soon as `need` matches are in hand.
    """
    f = filters.copy()
    f.after(after)
    test, size, limit = f.param(q), f.param(window), f.param(need + 1)
    rows = await conn.fetch(
        f"""SELECT * FROM (
                SELECT {COLUMNS}, search @@ {QUERY.format(test)} AS hit,
                       row_number() OVER (ORDER BY created_at DESC, id DESC) = {size} AS edge
                  FROM interactions WHERE {f.where()}
                 ORDER BY created_at DESC, id DESC LIMIT {size}) AS newest
             WHERE hit OR edge ORDER BY created_at DESC, id DESC LIMIT {limit}""", *f.params)
    hits = [r for r in rows if r["hit"]][:need]
    last = rows[-1] if rows and rows[-1]["edge"] and len(hits) < need else None
    return hits, (last["created_at"], last["id"]) if last else None


async def rest(conn: asyncpg.Connection, filters: Filters, q: str, after: tuple[datetime, uuid.UUID] | None,
               need: int, *, gin: bool) -> list[asyncpg.Record]:
    """The next `need` matches in one query: through the GIN index (every match in the table, sorted) when
    `gin`, else by the walk (the only way for a query like `-word` that no index can answer).

    The GIN plan is asked for with planner settings local to its transaction, and planned afresh each
    time: a cached generic plan would carry the settings of whichever call prepared it.
    """
    f = filters.copy()
    f.after(after)
    f.add(f"search @@ {QUERY}", q)
    limit = f.param(need)
    sql = (f"SELECT {COLUMNS} FROM interactions WHERE {f.where()} ORDER BY created_at DESC, id DESC LIMIT {limit}"
           + (" -- GIN first" if gin else ""))
    if not gin:
        return list(await conn.fetch(sql, *f.params))
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_seqscan = off;"
                           " SET LOCAL plan_cache_mode = force_custom_plan")
        return list(await conn.fetch(sql, *f.params))


async def table_rows(conn: asyncpg.Connection) -> float:
    """Rows in the whole table, as Postgres last counted them: the GIN plan reads matches of every project."""
    return max(float(await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'interactions'::regclass")),
               0.0)
