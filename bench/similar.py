"""bench/similar: `GET …/interactions/{id}/similar` at a million interactions in one project.

On the embedded Postgres (the pgserver wheel `relay dev` runs, with pgvector), migrated with the cell's
own migrations, one project is given `--rows` interactions (1,000,000 by default) and as many vectors in
`interaction_vectors`. The vectors are made from the local model's embeddings of the labelled reports of
bench/data/enrichment (each a mix of two reports' embeddings plus noise, unit length), so the index sees
clusters as real reports make, not uniform noise, which no index is built for. The rows are loaded with
COPY and the HNSW index of migration 0023 is built once they are in (as an operator would for a bulk
import; the index itself is the migration's, same definition).

Then the endpoint's database work runs for random interactions of the project, one call at a time, as
the handler does it (`cell.interactions.duplicates.similar_interactions`: the interaction's vector, the
suggestions it dismissed, `index.nearest`, the rows of the neighbours): p50 and p99 in ms (the router and
HTTP add about a millisecond, measured in bench/router.py). Recall@10 of the index against an exact scan
over the same rows is measured on a sample. The exact path a Postgres without pgvector takes scans at most
`index.EXACT_LIMIT` vectors, so its time does not grow with the project: it is measured too, on the
machine's Postgres when one answers on 5432, with one project of EXACT_LIMIT + 1000 vectors.

RESULT lines: `similar.p50_ms`, `similar.p99_ms` (HNSW, 1M), `similar.recall_at_10`, `similar.exact_p99_ms`.
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import numpy.typing as npt

from bench import enrichment as labelled
from bench.harness import result
from cell.enrichment import embedding, index
from cell.interactions import groups
from common.migrate import migrate
from relay.cli import MIGRATIONS
from relay.embedded import PostgresServer

ROWS = 1_000_000
BATCH = 20_000
CALLS = 400
LIMIT = 10

Matrix = npt.NDArray[np.float32]


def vectors(base: Matrix, n: int, seed: int) -> Matrix:
    """`n` unit vectors near mixes of two base vectors."""
    rng = np.random.default_rng(seed)
    a = base[rng.integers(0, len(base), n)]
    b = base[rng.integers(0, len(base), n)]
    v = a + 0.5 * b + rng.normal(0, 0.04, (n, base.shape[1])).astype(np.float32)
    out: Matrix = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


def _encode(value: Matrix) -> bytes:
    return struct.pack(">HH", len(value), 0) + value.astype(">f4").tobytes()


async def _project(conn: asyncpg.Connection) -> uuid.UUID:
    pid = uuid.uuid4()
    await conn.execute("INSERT INTO projects (id, name, region, secret) VALUES ($1, 'bench', 'us-west', $2)",
                       pid, b"x" * 32)
    return pid


async def load(dsn: str, pid: uuid.UUID, base: Matrix, rows: int, *, hnsw: bool) -> list[uuid.UUID]:
    """`rows` interactions of project `pid` and their vectors; their ids."""
    conn = await asyncpg.connect(dsn)
    if hnsw:
        await conn.set_type_codec("vector", schema="public", format="binary", encoder=_encode,
                                  decoder=lambda raw: raw)
    start = datetime.now(UTC) - timedelta(days=365)
    ids: list[uuid.UUID] = []
    try:
        for offset in range(0, rows, BATCH):
            n = min(BATCH, rows - offset)
            batch = [uuid.uuid4() for _ in range(n)]
            at = [start + timedelta(seconds=30 * (offset + i)) for i in range(n)]
            await conn.copy_records_to_table(
                "interactions", columns=["id", "project_id", "type", "content_text", "created_at"],
                records=[(i, pid, "bug", "synthetic report", t) for i, t in zip(batch, at, strict=True)])
            v = vectors(base, n, offset)
            column = "embedding" if hnsw else "unit"
            await conn.copy_records_to_table(
                "interaction_vectors", columns=["project_id", "interaction_id", "model", column, "created_at"],
                records=[(pid, i, embedding.MODEL, v[k] if hnsw else v[k].astype("<f4").tobytes(), at[k])
                         for k, i in enumerate(batch)])
            ids.extend(batch)
            if offset % 100_000 == 0:
                print(f"  loaded {offset + n:,} rows", flush=True)
    finally:
        await conn.close()
    return ids


async def drop_index(dsn: str) -> str:
    """Drop migration 0023's HNSW index before a bulk load (one insert at a time into HNSW is what makes a
    load slow); its definition, to build it again afterwards."""
    conn = await asyncpg.connect(dsn)
    try:
        definition: str = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_interaction_vectors_hnsw'")
        await conn.execute("DROP INDEX idx_interaction_vectors_hnsw")
        return definition
    finally:
        await conn.close()


async def build_index(dsn: str, definition: str) -> float:
    """Build migration 0023's HNSW index over the loaded rows; seconds taken."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '8GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 2")
        began = time.perf_counter()
        await conn.execute(definition)
        await conn.execute("ANALYZE interaction_vectors")
        return time.perf_counter() - began
    finally:
        await conn.close()


async def calls(dsn: str, which: index.Index, pid: uuid.UUID, sample: list[uuid.UUID]) -> list[float]:
    """The handler's database work for each sampled interaction; milliseconds each."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    took = []
    try:
        for iid in sample:
            began = time.perf_counter()
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT EXISTS (SELECT 1 FROM interactions WHERE project_id = $1 AND id = $2)",
                                    pid, iid)
                found = await index.vector_of(conn, which, pid, iid)
                assert found is not None
                exclude = [iid, *await groups.dismissed_with(conn, pid, iid)]
                near = await index.nearest(conn, which, pid, found[0], found[1], exclude, LIMIT)
                await conn.fetch("SELECT * FROM interactions WHERE project_id = $1 AND id = ANY($2)", pid,
                                 [n.interaction_id for n in near])
            took.append((time.perf_counter() - began) * 1000)
    finally:
        await pool.close()
    return took


async def recall(dsn: str, pid: uuid.UUID, sample: list[uuid.UUID]) -> float:
    """Share of the exact 10 nearest that the HNSW path returns."""
    conn = await asyncpg.connect(dsn)
    hnsw = index.Index("hnsw")
    hits = total = 0
    try:
        for iid in sample:
            found = await index.vector_of(conn, hnsw, pid, iid)
            assert found is not None
            got = {n.interaction_id for n in await index.nearest(conn, hnsw, pid, found[0], found[1], [iid], LIMIT)}
            await conn.execute("SET enable_indexscan = off")
            exact = await conn.fetch(
                """SELECT interaction_id FROM interaction_vectors WHERE project_id = $1 AND interaction_id <> $2
                    ORDER BY embedding <#> $3::vector LIMIT $4""", pid, iid, index.literal(found[1]), LIMIT)
            await conn.execute("RESET enable_indexscan")
            hits += len(got & {r["interaction_id"] for r in exact})
            total += LIMIT
    finally:
        await conn.close()
    return hits / total


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


async def hnsw_path(base: Matrix, rows: int) -> None:
    """The path of a Postgres with pgvector: the embedded server, at `rows` interactions."""
    scratch = Path(tempfile.mkdtemp(prefix="relay-bench-similar-"))
    server = PostgresServer(scratch / "pg", durable=False).start()
    try:
        dsn = server.url
        await migrate(dsn, MIGRATIONS["cell"])
        conn = await asyncpg.connect(dsn)
        which = await index.detect(conn)
        if not which.hnsw:
            sys.exit("bench/similar: the embedded Postgres has no pgvector")
        pid = await _project(conn)
        await conn.close()
        definition = await drop_index(dsn)
        began = time.perf_counter()
        ids = await load(dsn, pid, base, rows, hnsw=True)
        print(f"loaded {rows:,} interactions and vectors in {time.perf_counter() - began:.0f} s", flush=True)
        built = await build_index(dsn, definition)
        print(f"HNSW index (m=16, ef_construction=64) built in {built:.0f} s", flush=True)
        sample = random.Random(1).sample(ids, CALLS)
        await calls(dsn, which, pid, sample[:50])  # warm the caches
        took = await calls(dsn, which, pid, sample)
        rec = await recall(dsn, pid, sample[:100])
        print(f"similar over {rows:,} interactions in one project (HNSW): p50 {percentile(took, 50):.2f} ms, "
              f"p99 {percentile(took, 99):.2f} ms over {CALLS} calls; recall@{LIMIT} vs exact {rec:.3f}")
        result("similar.p50_ms", percentile(took, 50), "ms")
        result("similar.p99_ms", percentile(took, 99), "ms")
        result("similar.recall_at_10", rec, "ratio")
    finally:
        server.stop()


async def exact_path(dsn: str, base: Matrix) -> None:
    """The path of a Postgres without pgvector: the machine's, when it answers."""
    await migrate(dsn, MIGRATIONS["cell"])
    conn = await asyncpg.connect(dsn)
    which = await index.detect(conn)
    pid = await _project(conn)
    await conn.close()
    if which.hnsw:
        print("exact path: this Postgres has pgvector; not measured")
        return
    ids = await load(dsn, pid, base, index.EXACT_LIMIT + 1000, hnsw=False)
    sample = random.Random(2).sample(ids, 200)
    await calls(dsn, which, pid, sample[:20])
    took = await calls(dsn, which, pid, sample)
    print(f"similar without pgvector (exact scan of the newest {index.EXACT_LIMIT}): "
          f"p50 {percentile(took, 50):.2f} ms, p99 {percentile(took, 99):.2f} ms")
    result("similar.exact_p99_ms", percentile(took, 99), "ms")


def main() -> None:
    rows = int(sys.argv[sys.argv.index("--rows") + 1]) if "--rows" in sys.argv else ROWS
    reports = labelled.load()
    labelled.embed(reports)
    base = np.array([r.embedding for r in reports if r.embedding is not None], dtype=np.float32)
    asyncio.run(hnsw_path(base, rows))
    from tests.services import StorePostgres  # the suite's way to find the machine's Postgres

    store = StorePostgres(Path(tempfile.mkdtemp(prefix="relay-bench-similar-exact-")))
    try:
        asyncio.run(exact_path(store.database("bench_similar_exact"), base))
    finally:
        store.close()


if __name__ == "__main__":
    main()
