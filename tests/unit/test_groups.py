"""What a worker may not do to groups people decided (cell/interactions/groups.py `conflicts`), on real Postgres:
join a pair a person dismissed, or join two groups a person confirmed separately (only a person's merge does;
feedback items count the people of confirmed groups, cell/feedback/demand.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from cell.enrichment import grouping, jobs
from cell.interactions import groups
from common.ids import uuid7
from common.pg import create_pool
from tests.services import StorePostgres, offline_cell_settings


@pytest.fixture(scope="module")
def dsn(pg: StorePostgres) -> str:
    return pg.migrated("groups_unit", "cell")


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(dsn, 2)
    yield p
    await p.close()


async def _project(conn: asyncpg.Connection, pid: uuid.UUID) -> None:
    await conn.execute("INSERT INTO projects (id, name, region, secret) VALUES ($1, 'p', 'eu-west', '\\x00')", pid)


async def _interaction(conn: asyncpg.Connection, pid: uuid.UUID, group: str | None, confirmed: bool) -> uuid.UUID:
    iid = uuid7()
    await conn.execute(
        """INSERT INTO interactions (id, project_id, type, source, content_text, ai_duplicate_group_id,
                                     duplicate_confirmed)
           VALUES ($1, $2, 'bug', 'sdk', 'words', $3, $4)""", iid, pid, group or str(iid), confirmed)
    return iid


async def test_a_worker_never_joins_two_confirmed_groups_or_a_dismissed_pair(pool: asyncpg.Pool) -> None:
    pid = uuid7()
    async with pool.acquire() as conn:
        await _project(conn, pid)
        a = await _interaction(conn, pid, None, True)
        await _interaction(conn, pid, str(a), True)  # a person's group {a, …}
        b = await _interaction(conn, pid, None, True)
        await _interaction(conn, pid, str(b), True)  # another person's group {b, …}
        c = await _interaction(conn, pid, None, False)
        await _interaction(conn, pid, str(c), False)  # the workers' own group {c, …}
        new = await _interaction(conn, pid, None, False)
        # Joining one confirmed group, alone or with the workers' own: allowed.
        assert not await groups.conflicts(conn, pid, new, [str(a)])
        assert not await groups.conflicts(conn, pid, new, [str(a), str(c)])
        # Joining two confirmed groups: refused, whichever way round.
        assert await groups.conflicts(conn, pid, new, [str(a), str(b)])
        assert await groups.conflicts(conn, pid, new, [str(c), str(b), str(a)])
        # A new interaction a person already confirmed into a group counts as that group.
        confirmed_new = await _interaction(conn, pid, str(b), True)
        assert await groups.conflicts(conn, pid, confirmed_new, [str(a)])
        # A dismissed pair: refused even among the workers' own groups.
        d = await _interaction(conn, pid, None, False)
        low, high = sorted((c, d))
        await conn.execute("INSERT INTO duplicate_dismissals (project_id, interaction_id, other_id) "
                           "VALUES ($1, $2, $3)", pid, low, high)
        assert await groups.conflicts(conn, pid, new, [str(c), str(d)])


async def test_a_worker_keeps_the_group_a_person_chose_before_it_came(dsn: str, pool: asyncpg.Pool,
                                                                     tmp_path: Path) -> None:
    """`duplicate-of` may land before the workers reach a new report: enriching it then keeps the person's group
    (and its confirmation) instead of putting it where the workers would have."""
    settings = offline_cell_settings(dsn, tmp_path)
    pid = uuid7()
    async with pool.acquire() as conn:
        await _project(conn, pid)
        # Two reports nothing in their words connects, neither enriched yet; a person says they are one.
        a = await _interaction(conn, pid, None, False)
        b = await _interaction(conn, pid, None, False)
        await conn.execute("UPDATE interactions SET content_text = 'the invoice PDF shows last month' WHERE id = $1", a)
        await conn.execute("UPDATE interactions SET content_text = 'dark mode turns off after restart' WHERE id = $1",
                           b)
        async with conn.transaction():
            await groups.merge(conn, pid, b, a)
    async with httpx.AsyncClient() as http:
        assert await jobs.enrich(pool, settings, http, a) == "enriched"
        assert await jobs.enrich(pool, settings, http, b) == "enriched"
    rows = {r["id"]: r for r in await pool.fetch(
        "SELECT id, ai_duplicate_group_id, duplicate_confirmed FROM interactions WHERE project_id = $1", pid)}
    assert {(r["ai_duplicate_group_id"], r["duplicate_confirmed"]) for r in rows.values()} == {(str(min(a, b)), True)}
    signed = await pool.fetch("SELECT group_id FROM enrichment_signatures WHERE project_id = $1", pid)
    assert [s["group_id"] for s in signed] == [str(min(a, b))] * 2


async def test_unmerging_the_interaction_a_group_is_named_after_leaves_it_alone(pool: asyncpg.Pool) -> None:
    """The group bears the leaving interaction's id (the workers formed it around that one first): the rest
    takes its smallest id, and the one leaving keeps a group of its own (it used to be renamed with the rest)."""
    pid = uuid7()
    async with pool.acquire() as conn:
        await _project(conn, pid)
        namesake = await _interaction(conn, pid, None, True)
        first = await _interaction(conn, pid, str(namesake), True)
        second = await _interaction(conn, pid, str(namesake), False)
        async with conn.transaction():
            change = await groups.unmerge(conn, pid, namesake)
        assert change.changed and change.group_id == str(namesake)
        rows = {r["id"]: (r["ai_duplicate_group_id"], r["duplicate_confirmed"]) for r in await conn.fetch(
            "SELECT id, ai_duplicate_group_id, duplicate_confirmed FROM interactions WHERE project_id = $1", pid)}
        assert rows == {namesake: (str(namesake), False), first: (str(first), False), second: (str(first), False)}
        assert await conn.fetchval("SELECT count(*) FROM duplicate_dismissals WHERE project_id = $1", pid) == 2


async def test_a_worker_finds_an_older_duplicate_beyond_its_window_and_keeps_the_window(
        dsn: str, pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project with more enriched reports than a window holds (`jobs.RECENT`, two here): a new report still
    meets an older one that shares a rare term (`queries.sharing`, added to the window uncounted), and the
    worker's window of the project follows the latest reports from one decision to the next."""
    monkeypatch.setattr(jobs, "RECENT", 2)
    settings = offline_cell_settings(dsn, tmp_path)
    pid = uuid7()
    texts = ["the invoice PDF shows last month's totals after the currency switch",
             "dark mode turns off after every restart of the app",
             "push notifications arrive twice on Android tablets",
             "the search box ignores accented letters in names",
             "the invoice PDF shows last month's totals after the currency switch"]
    ids = []
    async with pool.acquire() as conn:
        await _project(conn, pid)
        for text in texts:
            iid = await _interaction(conn, pid, None, False)
            await conn.execute("UPDATE interactions SET content_text = $2 WHERE id = $1", iid, text)
            ids.append(iid)
    async with httpx.AsyncClient() as http:
        for iid in ids:
            assert await jobs.enrich(pool, settings, http, iid) == "enriched"
            window = jobs.WINDOWS.get((pid, grouping.METHOD))
            before = sorted(ids[:ids.index(iid)], reverse=True)[:2]
            assert window.keys[:window.counted] == before  # the latest two, newest first
    rows = {r["id"]: r["ai_duplicate_group_id"] for r in await pool.fetch(
        "SELECT id, ai_duplicate_group_id FROM interactions WHERE project_id = $1", pid)}
    assert rows[ids[4]] == rows[ids[0]] == str(ids[0])  # found beyond the window
    assert len({rows[i] for i in ids[:4]}) == 4


async def test_a_decision_that_fails_half_way_forgets_the_project_window(
        dsn: str, pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window was brought to the recent rows, then the query for older ones failed: the worker drops the
    window (it may be between two states) and the next decision builds it again from the database."""
    monkeypatch.setattr(jobs, "RECENT", 1)
    settings = offline_cell_settings(dsn, tmp_path)
    pid = uuid7()
    async with pool.acquire() as conn:
        await _project(conn, pid)
        first = await _interaction(conn, pid, None, False)
        second = await _interaction(conn, pid, None, False)

    async def broken(*args: object) -> None:
        raise ConnectionResetError("the database went away")

    async with httpx.AsyncClient() as http:
        assert await jobs.enrich(pool, settings, http, first) == "enriched"
        assert (pid, grouping.METHOD) in jobs.WINDOWS.entries
        with monkeypatch.context() as patch:
            patch.setattr(jobs.queries, "sharing", broken)
            with pytest.raises(ConnectionResetError):
                await jobs.enrich(pool, settings, http, second)
        assert (pid, grouping.METHOD) not in jobs.WINDOWS.entries
        assert await jobs.enrich(pool, settings, http, second) == "enriched"
