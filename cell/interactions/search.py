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

The GIN index pays for every word it looks up, common ones most: `build 417`, with `build` in every row,
costs it 9 ms where `417` alone costs 1. So for words joined by AND, it looks up only the rarest — by
the frequencies ANALYZE keeps of the table's commonest words (`pg_stats.most_common_elems`, read at
most every few minutes), a word not among them being rarer than any that is — and the whole query is
checked on the rows it finds.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from cell.interactions.queries import COLUMNS, Filters

SAMPLE = 1000
"""Rows walked before deciding: about 1.5 ms here, and a page of any word in more than 5% of rows."""
WALK_COST, GIN_COST = 1.7, 7.5
"""Microseconds per row: walking the newest-first index testing each row (and finding where the walk
ended), and fetching a row the GIN index found (a random heap read and the sort), measured over a
million interactions on 2 vCPU."""
ROUNDS = 3
"""Walks at most, before the GIN plan finishes the page whatever the estimates say."""

COMMON_SECONDS = 300
"""How long a process trusts its copy of the table's commonest words (they change as ANALYZE runs)."""

QUERY = "websearch_to_tsquery('simple', {})"
TERM = re.compile(r"'(?:[^'\\]|''|\\.)*'")
"""One quoted word of a tsquery as Postgres prints it (`'it''s'`)."""
CONJUNCTION = re.compile(rf"{TERM.pattern}(?: & {TERM.pattern})*")
"""A tsquery of words joined by AND and nothing else."""


async def page(pool: asyncpg.Pool, filters: Filters, q: str, after: tuple[datetime, uuid.UUID] | None,
               limit: int, *, sample: int = SAMPLE) -> list[asyncpg.Record]:
    """Up to `limit` + 1 interactions matching `q` and `filters`, newest first, strictly after `after`."""
    need = limit + 1
    found: list[asyncpg.Record] = []
    window = sample
    query: Query | None = None
    async with pool.acquire() as conn:
        for _ in range(ROUNDS):
            hits = await walk(conn, filters, q, after, window, need - len(found))
            found += hits
            if len(found) >= need:
                return found
            edge = await last_row(conn, filters, after, window)
            if edge is None:  # the rows ran out inside the window: these are all the matches there are
                return found
            after = edge
            query = query or await examine(conn, q)
            if query.empty:  # no words at all (only punctuation, say): nothing matches
                return found
            share, still = len(hits) / window, need - len(found)
            if query.indexable and (share == 0 or still / share * WALK_COST > share * query.table_rows * GIN_COST):
                break
            window = math.ceil(still / share * 1.5) if share else window * 4
        gin = bool(query and query.indexable)
        narrow = narrowed(query.tree, await common_words(pool, conn)) if gin and query else None
        found += await rest(conn, filters, q, after, need - len(found), gin=gin, narrow=narrow)
    return found


async def walk(conn: asyncpg.Connection, filters: Filters, q: str, after: tuple[datetime, uuid.UUID] | None,
               window: int, need: int) -> list[asyncpg.Record]:
    """The matches among the next `window` rows, at most `need`: Postgres stops walking once it has them."""
    f = filters.copy()
    f.after(after)
    test, size, limit = f.param(q), f.param(window), f.param(need)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT * FROM (
                SELECT {COLUMNS}, search @@ {QUERY.format(test)} AS hit
                  FROM interactions WHERE {f.where()}
                 ORDER BY created_at DESC, id DESC LIMIT {size}) AS newest
             WHERE hit LIMIT {limit}""", *f.params)
    return rows


async def last_row(conn: asyncpg.Connection, filters: Filters, after: tuple[datetime, uuid.UUID] | None,
                   window: int) -> tuple[datetime, uuid.UUID] | None:
    """The position of the window's last row, where the next step resumes; None when the rows ran out
    before the window did. (Read from the index alone, apart from the other filters' columns.)"""
    f = filters.copy()
    f.after(after)
    skip = f.param(window - 1)
    row = await conn.fetchrow(f"SELECT created_at, id FROM interactions WHERE {f.where()}"
                              f" ORDER BY created_at DESC, id DESC OFFSET {skip} LIMIT 1", *f.params)
    return (row["created_at"], row["id"]) if row else None


@dataclass(frozen=True)
class Query:
    """What deciding between the plans needs to know of the search itself."""

    empty: bool
    """No words at all: nothing can match."""
    indexable: bool
    """The GIN index can answer it (`-word` alone, say, it cannot)."""
    table_rows: float
    """Rows in the whole table as Postgres last counted them: the GIN plan reads matches of every project."""
    tree: str
    """The part of the query the GIN index can answer, as Postgres prints it (`querytree`)."""


async def examine(conn: asyncpg.Connection, q: str) -> Query:
    """The facts of `Query`, in one round trip."""
    row = await conn.fetchrow(
        f"""SELECT numnode(t) = 0 AS empty, querytree(t) <> 'T' AS indexable, querytree(t) AS tree,
                   greatest((SELECT reltuples FROM pg_class WHERE oid = 'interactions'::regclass), 0) AS table_rows
              FROM {QUERY.format('$1')} AS t""", q)
    assert row is not None
    return Query(row["empty"], row["indexable"], float(row["table_rows"]), row["tree"])


_common: dict[int, tuple[float, dict[str, float]]] = {}


async def common_words(pool: asyncpg.Pool, conn: asyncpg.Connection) -> dict[str, float]:
    """The words ANALYZE found commonest in `interactions.search`, with the share of rows holding each
    (none before it has run), cached per pool for `COMMON_SECONDS`: reading them costs 2 ms. Only plans
    depend on them, never results."""
    at, words = _common.get(id(pool), (0.0, {}))
    if time.monotonic() - at > COMMON_SECONDS:
        row = await conn.fetchrow(
            """SELECT most_common_elems::text::text[] AS words, most_common_elem_freqs AS shares FROM pg_stats
                WHERE schemaname = current_schema() AND tablename = 'interactions' AND attname = 'search'""")
        words = dict(zip(row["words"], row["shares"], strict=False)) if row and row["words"] else {}
        _common[id(pool)] = (time.monotonic(), words)
    return words


RAREST = 10.0
"""Words up to this many times as common as the query's rarest are looked up with it."""


def narrowed(tree: str, shares: dict[str, float]) -> str | None:
    """For a query of words joined by AND: its rarest words, as a tsquery for the GIN index to look up
    alone (a word missing from `shares` is rarer than any in it). None for any other query, or when
    every word is about as rare as the rarest."""
    if not CONJUNCTION.fullmatch(tree):
        return None
    terms = TERM.findall(tree)
    share = {t: shares.get(re.sub(r"''|\\(.)", lambda m: m.group(1) or "'", t[1:-1]), 0.0) for t in terms}
    rarest = min(share.values())
    kept = [t for t in terms if share[t] <= rarest * RAREST]
    return " & ".join(kept) if len(kept) < len(terms) else None


async def rest(conn: asyncpg.Connection, filters: Filters, q: str, after: tuple[datetime, uuid.UUID] | None,
               need: int, *, gin: bool, narrow: str | None = None) -> list[asyncpg.Record]:
    """The next `need` matches in one query: through the GIN index (every match in the table, sorted) when
    `gin`, else by the walk (the only way for a query like `-word` that no index can answer). With
    `narrow`, the index looks up only those words and the whole query is checked on what it finds
    (`ts_match_vq` is `@@` in a form the planner does not give the index).

    The GIN plan is asked for with planner settings local to its transaction, and planned afresh each
    time: a cached generic plan would carry the settings of whichever call prepared it.
    """
    f = filters.copy()
    f.after(after)
    if narrow is None:
        f.add(f"search @@ {QUERY}", q)
    else:
        f.add("search @@ {}::tsquery", narrow)
        f.add(f"ts_match_vq(search, {QUERY})", q)
    limit = f.param(need)
    sql = (f"SELECT {COLUMNS} FROM interactions WHERE {f.where()} ORDER BY created_at DESC, id DESC LIMIT {limit}"
           + (" -- GIN first" if gin else ""))
    if not gin:
        return list(await conn.fetch(sql, *f.params))
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_seqscan = off;"
                           " SET LOCAL plan_cache_mode = force_custom_plan")
        return list(await conn.fetch(sql, *f.params))
