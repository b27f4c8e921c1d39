"""Full-text search pages (cell.interactions.search) against real Postgres: exactly the rows, in exactly the
order, that the plain query gives — for words of every rarity, words only in old rows, words that never meet,
queries no index can answer — whichever plan the measurements pick, page after page; and the plan picked is
the one the measurements call for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from cell.interactions import search
from cell.interactions.queries import Filters
from common.ids import uuid7
from common.pg import create_pool
from tests.services import StorePostgres

ROWS = 6000
# Row i (1 = newest) has `common`; `half` and `alpha` on even rows, `beta` on odd ones (so `alpha beta`
# never matches though both words are everywhere); `sparse` on every 200th; `rare` on three; `old` only on
# the oldest hundred. Rows come in threes with one timestamp, so the id breaks ties.
SEED = f"""
INSERT INTO interactions (id, project_id, type, source, content_text, content_json, created_at, updated_at)
SELECT gen_random_uuid(), $1, (ARRAY['bug','feedback'])[1 + i % 2]::interaction_type, 'sdk',
       concat_ws(' ', 'common', CASE WHEN i % 2 = 0 THEN 'half alpha' ELSE 'beta' END,
                 CASE WHEN i % 200 = 0 THEN 'sparse' END, CASE WHEN i IN (17, 2500, 5999) THEN 'rare' END,
                 CASE WHEN i > {ROWS} - 100 THEN 'old' END),
       '{{}}'::jsonb, now() - make_interval(secs => i / 3), now()
FROM generate_series(1, {ROWS}) AS i
"""
QUERIES = ["common", "half", "sparse", "rare", "old", "alpha beta", "-half", '"common half"', "rare or sparse",
           "!!!", "nosuchword", "common sparse", "half old -alpha", "common rare beta"]


@pytest.fixture(scope="module")
def dsn(pg: StorePostgres) -> str:
    return pg.migrated("search_unit", "cell")


@pytest.fixture(scope="module")
def projects(dsn: str) -> tuple[uuid.UUID, uuid.UUID]:
    """One project to search, and another full of `rare` that must never show up in it."""
    async def seed() -> tuple[uuid.UUID, uuid.UUID]:
        conn = await asyncpg.connect(dsn)
        try:
            ours, theirs = uuid7(), uuid7()
            for pid in (ours, theirs):
                await conn.execute("INSERT INTO projects (id, name, region, secret) VALUES ($1, 'p', 'us-west', "
                                   "'\\x00')", pid)
            await conn.execute(SEED, ours)
            await conn.execute(SEED.replace("'common'", "'rare'"), theirs)
            await conn.execute("ANALYZE interactions")
            return ours, theirs
        finally:
            await conn.close()
    return asyncio.run(seed())


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(dsn, 2)
    yield p
    await p.close()


async def reference(pool: asyncpg.Pool, pid: uuid.UUID, q: str, type_: str | None) -> list[uuid.UUID]:
    """Every match, newest first, by the plain query."""
    rows = await pool.fetch(
        """SELECT id FROM interactions WHERE project_id = $1 AND search @@ websearch_to_tsquery('simple', $2)
              AND ($3::interaction_type IS NULL OR type = $3) ORDER BY created_at DESC, id DESC""", pid, q, type_)
    return [r["id"] for r in rows]


async def all_pages(pool: asyncpg.Pool, pid: uuid.UUID, q: str, type_: str | None, limit: int,
                    sample: int) -> list[uuid.UUID]:
    """Every match, by following the pages as a client follows `next_cursor`."""
    shown: list[uuid.UUID] = []
    after = None
    while True:
        f = Filters(pid)
        f.add("type = {}", type_)
        rows = await search.page(pool, f, q, after, limit, sample=sample)
        assert len(rows) <= limit + 1
        shown += [r["id"] for r in rows[:limit]]
        if len(rows) <= limit:
            return shown
        after = (rows[limit - 1]["created_at"], rows[limit - 1]["id"])


@pytest.mark.parametrize("q", QUERIES)
async def test_every_page_is_what_the_plain_query_gives(pool: asyncpg.Pool, projects: tuple[uuid.UUID, uuid.UUID],
                                                        q: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ours, _ = projects
    # The GIN index looks up only the words not counted common: `common` and `half` here.
    monkeypatch.setattr(search, "common_words", _common("common", "half"))
    for type_ in (None, "feedback"):
        expected = await reference(pool, ours, q, type_)
        for limit, sample in ((50, 1000), (7, 100), (25, 13)):
            assert await all_pages(pool, ours, q, type_, limit, sample) == expected, (q, type_, limit, sample)


async def test_the_plan_follows_the_measurements(pool: asyncpg.Pool, projects: tuple[uuid.UUID, uuid.UUID],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A common word is answered by the first walk alone; a word the first rows never hold goes to the GIN
    index after one walk; a word in one row of 200 walks on while walking is cheaper than reading its
    matches from the whole table; a query no index can answer never asks the GIN index."""
    ours, _ = projects
    calls: list[str] = []
    walk, rest = search.walk, search.rest

    async def spy_walk(*args: Any, **kwargs: Any) -> Any:
        calls.append("walk")
        return await walk(*args, **kwargs)

    async def spy_rest(*args: Any, gin: bool, narrow: str | None = None) -> Any:
        calls.append(("gin" if gin else "walk all") + (f" {narrow}" if narrow else ""))
        return await rest(*args, gin=gin, narrow=narrow)

    monkeypatch.setattr(search, "walk", spy_walk)
    monkeypatch.setattr(search, "rest", spy_rest)

    async def plan(q: str, sample: int, limit: int = 10) -> list[str]:
        calls.clear()
        await search.page(pool, Filters(ours), q, None, limit, sample=sample)
        return list(calls)

    assert await plan("half", 100) == ["walk"]
    assert await plan("rare", 100) == ["walk", "gin"]
    assert await plan("old", 100) == ["walk", "gin"]
    # `sparse`: 1 row in 200 of this project, but the GIN plan would read its matches in both projects.
    monkeypatch.setattr(search, "examine", _table_rows(1_000_000))
    assert (await plan("sparse", 400, limit=3))[:2] == ["walk", "walk"]
    monkeypatch.setattr(search, "examine", _table_rows(2 * ROWS))
    assert await plan("sparse", 400, limit=3) == ["walk", "gin"]
    assert await plan("-common", 100) == ["walk", "walk", "walk", "walk all"]
    assert await plan("!!!", 100) == ["walk"]
    # Of words joined by AND, the GIN index looks up those not counted common, when there are some.
    monkeypatch.setattr(search, "common_words", _common("common", "half"))
    assert await plan("common old", 100) == ["walk", "gin 'old'"]
    assert await plan("half old -alpha", 100) == ["walk", "gin 'old'"]
    assert await plan("common half rare", 100) == ["walk", "gin 'rare'"]
    assert await plan("old", 100) == ["walk", "gin"]
    assert await plan("sparse or old", 100) == ["walk", "gin"]


def test_narrowed_keeps_the_rarest_words_of_a_conjunction() -> None:
    shares = {"build": 1.0, "checkout": 0.125, "login": 0.125, "417": 0.001, "it's": 0.5, "a\\b": 0.5}
    assert search.narrowed("'build' & '417'", shares) == "'417'"
    assert search.narrowed("'build' & '417' & 'x''y'", shares) == "'x''y'"  # not counted: rarer still
    assert search.narrowed("'it''s' & 'a\\\\b' & 'z'", shares) == "'z'"
    assert search.narrowed("'checkout' & 'build'", shares) is None  # within ten times of each other
    assert search.narrowed("'checkout' & 'login'", shares) is None  # as rare as each other
    assert search.narrowed("'build'", shares) is None
    assert search.narrowed("'417' & 'z'", shares) == "'z'"
    assert search.narrowed("'y' & 'z'", shares) is None
    assert search.narrowed("'build' | '417'", shares) is None
    assert search.narrowed("'build' <-> '417'", shares) is None
    assert search.narrowed("'build' & ( '417' | 'z' )", shares) is None


def _common(*words: str) -> Any:
    async def common_words(pool: asyncpg.Pool, conn: asyncpg.Connection) -> dict[str, float]:
        return dict.fromkeys(words, 0.5)
    return common_words


def _table_rows(n: float) -> Any:
    """`search.examine`, with the table holding `n` rows."""
    examine = search.examine

    async def examined(conn: asyncpg.Connection, q: str) -> search.Query:
        return dataclasses.replace(await examine(conn, q), table_rows=n)
    return examined
