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
from common.migrate import migrate
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

