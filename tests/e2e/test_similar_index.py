"""The similarity index on both kinds of server: migration 0023 succeeds on each, the cell reads which index
it got, and both paths find the same neighbours.

The machine's Postgres 15 has no pgvector: exact scan. The embedded server (the pgserver wheel `relay dev`
runs) has it: HNSW, started here on its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import pytest

from cell.enrichment import index
from cell.interactions import duplicates, groups
from common.migrate import migrate
from common.pg import create_pool
from relay.cli import MIGRATIONS
from relay.embedded import PostgresServer
from tests.conftest import until
from tests.services import StorePostgres


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = PostgresServer(tmp_path_factory.mktemp("pgvector") / "pg", durable=False).start()

    async def ready() -> bool:
        try:
            await (await asyncpg.connect(server.url)).close()
        except asyncpg.CannotConnectNowError:  # listening, still starting up
            return False
        return True

    until(lambda: asyncio.run(ready()), 60, "the embedded Postgres")
    yield server.url
    server.stop()


def _vectors(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(8, index.DIMENSIONS))
    v = centres[np.arange(n) % 8] + rng.normal(scale=0.3, size=(n, index.DIMENSIONS))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


async def _fill(dsn: str, n: int) -> tuple[index.Index, uuid.UUID, list[uuid.UUID], np.ndarray]:
    await migrate(dsn, MIGRATIONS["cell"])
    conn = await asyncpg.connect(dsn)
    try:
        which = await index.detect(conn)
        pid = uuid.uuid4()
        await conn.execute("INSERT INTO projects (id, name, region, secret) VALUES ($1, 'p', 'us-west', $2)",
                           pid, b"x" * 32)
        ids = [uuid.uuid4() for _ in range(n)]
        start = datetime.now(UTC) - timedelta(days=1)
        vectors = _vectors(n)
        for k, iid in enumerate(ids):
            at = start + timedelta(seconds=k)
            await conn.execute("INSERT INTO interactions (id, project_id, type, created_at) VALUES ($1, $2, 'bug', $3)",
                               iid, pid, at)
            if k % 2:  # as the enrichment job stores: inside its transaction (the index's own is a savepoint)
                async with conn.transaction():
                    await index.store(conn, which, pid, iid, "m", [float(x) for x in vectors[k]], at)
                    assert await conn.fetchval("SHOW enable_sort") == "on"  # not left off for the job
            else:
                await index.store(conn, which, pid, iid, "m", [float(x) for x in vectors[k]], at)
        return which, pid, ids, vectors
    finally:
        await conn.close()


async def _neighbours(dsn: str, which: index.Index, pid: uuid.UUID, iid: uuid.UUID, k: int) -> list[uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await index.vector_of(conn, which, pid, iid)
        assert found is not None and found[0] == "m"
        return [n.interaction_id for n in await index.nearest(conn, which, pid, "m", found[1], [iid], k)]
    finally:
        await conn.close()


def _exact(ids: list[uuid.UUID], vectors: np.ndarray, i: int, k: int) -> list[uuid.UUID]:
    scores = vectors @ vectors[i]
    scores[i] = -np.inf
    return [ids[j] for j in np.argsort(-scores)[:k]]


def test_the_machines_postgres_gets_the_exact_scan(pg: StorePostgres) -> None:
    dsn = pg.database("similar_exact")
    which, pid, ids, vectors = asyncio.run(_fill(dsn, 60))
    if which.hnsw:
        pytest.skip("this machine's Postgres has pgvector")
    assert asyncio.run(_neighbours(dsn, which, pid, ids[5], 5)) == _exact(ids, vectors, 5, 5)


def test_the_embedded_server_gets_hnsw_and_finds_the_same(embedded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    which, pid, ids, vectors = asyncio.run(_fill(embedded, 300))
    assert which.hnsw
    assert asyncio.run(_neighbours(embedded, which, pid, ids[3], 5)) == _exact(ids, vectors, 3, 5)  # small: exact
    monkeypatch.setattr(index, "EXACT_LIMIT", 10)  # a "large" project: through the HNSW index
    for i in (3, 17, 250):
        got = asyncio.run(_neighbours(embedded, which, pid, ids[i], 5))
        assert len(set(got) & set(_exact(ids, vectors, i, 5))) >= 4, i
    # The HNSW path is the index's (the plan says so), not a sequential scan.
    plan = asyncio.run(_plan(embedded, pid))
    assert "idx_interaction_vectors_hnsw" in plan, plan


async def _plan(dsn: str, pid: uuid.UUID) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET enable_sort = off")  # as index.nearest does for a large project
        rows = await conn.fetch(
            """EXPLAIN SELECT interaction_id FROM interaction_vectors
                WHERE project_id = $1 AND model = 'm' AND embedding IS NOT NULL
                ORDER BY embedding <#> $2::vector LIMIT 5""", pid, index.literal(_vectors(1)[0]))
        return "\n".join(r[0] for r in rows)
    finally:
        await conn.close()



def _exact_lists(vectors: np.ndarray) -> np.ndarray:
    """Each row's cosines to its HUB_K nearest other rows, best first."""
    cosines = vectors @ vectors.T
    np.fill_diagonal(cosines, -np.inf)
    return -np.sort(-cosines, axis=1)[:, :index.HUB_K]


async def _suggestions(dsn: str, which: index.Index, pid: uuid.UUID, iid: uuid.UUID,
                       k: int) -> tuple[list[uuid.UUID] | None, list[uuid.UUID]]:
    """What the handler suggests (`duplicates.suggest`), and what `index.similar` ranks for the same vector;
    where both have suggestions, their scores agree and fall in the order shown."""
    pool = await create_pool(dsn, 1)
    try:
        async with pool.acquire() as conn:
            found = await duplicates.suggest(conn, which, pid, iid, k)
            vector = await index.vector_of(conn, which, pid, iid)
            exclude = await groups.dismissed_with(conn, pid, iid)
            python = [] if vector is None else await index.similar(conn, which, pid, iid, "m", vector[1], exclude, k)
        if found and [s.interaction.id for s in found] == [n.interaction_id for n in python]:
            assert [s.score for s in found] == [round(min(1.0, max(0.0, n.score or 0.0)), 4) for n in python]
        if found:
            assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)
        return (None if found is None else [s.interaction.id for s in found]), [n.interaction_id for n in python]
    finally:
        await pool.close()


def _hubness_kept(dsn: str, pid: uuid.UUID, ids: list[uuid.UUID], vectors: np.ndarray) -> None:
    """Every row's neighbour list, kept as the rows arrived, is its exact HUB_K best (the reverse updates
    reach every row that has the new one among its best), and its hubness their mean."""
    async def read() -> dict[uuid.UUID, asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT interaction_id, neighbour_cosines, hubness FROM interaction_vectors "
                                    "WHERE project_id = $1", pid)
            return {r["interaction_id"]: r for r in rows}
        finally:
            await conn.close()

    stored = asyncio.run(read())
    exact = _exact_lists(vectors)
    same = sum(np.allclose(stored[iid]["neighbour_cosines"], exact[k], atol=1e-4) for k, iid in enumerate(ids))
    assert same >= 0.95 * len(ids), same
    for iid in ids:
        assert stored[iid]["hubness"] == pytest.approx(np.mean(stored[iid]["neighbour_cosines"]), abs=1e-5)


def _csls(ids: list[uuid.UUID], vectors: np.ndarray, i: int, k: int) -> list[uuid.UUID]:
    """CSLS by brute force: the CANDIDATES nearest by cosine, by cos − r/2, r over all the rows."""
    cosines = vectors @ vectors.T
    np.fill_diagonal(cosines, -np.inf)
    r = -np.sort(-cosines, axis=1)[:, :index.HUB_K].mean(axis=1)
    candidates = np.argsort(-cosines[i])[:index.CANDIDATES]
    best = sorted(candidates, key=lambda j: (cosines[i, j] - r[j] / 2, cosines[i, j]), reverse=True)
    return [ids[j] for j in best[:k]]


def test_the_machines_postgres_ranks_by_csls(pg: StorePostgres) -> None:
    """The exact scan computes its candidates' hubness from the vectors it reads: CSLS exactly."""
    dsn = pg.database("similar_csls_exact")
    which, pid, ids, vectors = asyncio.run(_fill(dsn, 120))
    if which.hnsw:
        pytest.skip("this machine's Postgres has pgvector")
    differs = False
    for i in (0, 40, 77, 119):
        handler, python = asyncio.run(_suggestions(dsn, which, pid, ids[i], 5))
        assert handler == python == _csls(ids, vectors, i, 5)
        differs |= python != _exact(ids, vectors, i, 5)
    assert differs  # CSLS is not the cosine order everywhere (else this test would not tell them apart)


def test_the_embedded_server_ranks_by_csls_in_one_statement(embedded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HNSW path's statement (`index.ranked_sql`, joined to the rows by `duplicates.suggest`) ranks as
    `index.rank` does; it leaves out dismissed pairs, shows logs, and tells a missing interaction (None) from
    one without a vector ([])."""
    which, pid, ids, vectors = asyncio.run(_fill(embedded, 200))
    assert which.hnsw
    _hubness_kept(embedded, pid, ids, vectors)
    for i in (1, 77, 199):  # a small project: both scan exactly, so both rank alike
        handler, python = asyncio.run(_suggestions(embedded, which, pid, ids[i], 6))
        assert handler == python and len(python) == 6
    # CSLS is not the cosine order everywhere (else this test would not tell the two apart).
    assert any(asyncio.run(_suggestions(embedded, which, pid, ids[i], 5))[1] != _exact(ids, vectors, i, 5)
               for i in range(0, 200, 10))

    first = asyncio.run(_suggestions(embedded, which, pid, ids[5], 3))[0]
    assert first is not None
    dismissed, logged = first[0], first[1]

    async def change() -> uuid.UUID:
        conn = await asyncpg.connect(embedded)
        try:
            a, b = sorted((ids[5], dismissed))
            await conn.execute("INSERT INTO duplicate_dismissals (project_id, interaction_id, other_id) "
                               "VALUES ($1, $2, $3)", pid, a, b)
            await conn.execute("INSERT INTO interaction_logs (id, project_id, interaction_id, errors) "
                               """VALUES ($1, $2, $3, '[{"message": "TypeError: boom"}]')""", uuid.uuid4(), pid, logged)
            bare = uuid.uuid4()
            await conn.execute("INSERT INTO interactions (id, project_id, type) VALUES ($1, $2, 'bug')", bare, pid)
            return bare
        finally:
            await conn.close()

    bare = asyncio.run(change())

    async def details() -> tuple[list[duplicates.Similar] | None, list[duplicates.Similar] | None,
                                 list[duplicates.Similar] | None]:
        pool = await create_pool(embedded, 1)
        try:
            async with pool.acquire() as conn:
                return (await duplicates.suggest(conn, which, pid, ids[5], 3),
                        await duplicates.suggest(conn, which, pid, bare, 3),
                        await duplicates.suggest(conn, which, pid, uuid.uuid4(), 3))
        finally:
            await pool.close()

    now, without_vector, missing = asyncio.run(details())
    assert now is not None and dismissed not in [s.interaction.id for s in now]
    shown = next(s for s in now if s.interaction.id == logged)
    assert shown.interaction.logs is not None and shown.interaction.logs.errors[0]["message"] == "TypeError: boom"
    assert without_vector == [] and missing is None

    monkeypatch.setattr(index, "EXACT_LIMIT", 10)  # a "large" project: the statement goes through the index
    index._large.clear()
    for i in (3, 17, 150):
        handler, python = asyncio.run(_suggestions(embedded, which, pid, ids[i], 5))
        assert handler is not None and len(set(handler) & set(python)) >= 4, i

    async def store_one_more() -> tuple[str, list[float]]:
        """As the job stores into a large project: in its transaction, the sort left on afterwards."""
        conn = await asyncpg.connect(embedded)
        try:
            iid = uuid.uuid4()
            await conn.execute("INSERT INTO interactions (id, project_id, type) VALUES ($1, $2, 'bug')", iid, pid)
            async with conn.transaction():
                await index.store(conn, which, pid, iid, "m", [float(x) for x in vectors[42]], datetime.now(UTC))
                setting = await conn.fetchval("SHOW enable_sort")
            mine = await conn.fetchval("SELECT neighbour_cosines FROM interaction_vectors WHERE interaction_id = $1",
                                       iid)
            return setting, list(mine)
        finally:
            await conn.close()

    setting, mine = asyncio.run(store_one_more())
    assert setting == "on"
    assert mine[0] == pytest.approx(1.0, abs=1e-4) and len(mine) == index.HUB_K  # ids[42] is its twin
    index._large.clear()
