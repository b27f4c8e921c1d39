"""bench/similar: `GET …/interactions/{id}/similar` at a million interactions in one project.

On the embedded Postgres (the pgserver wheel `relay dev` runs, with pgvector 0.6.2), migrated with the
cell's own migrations, one project is given `--rows` interactions (1,000,000 by default; a title and a
description each, logs for every fourth) and as many vectors in `interaction_vectors`, with a hubness each
(migration 0026). The vectors are made from the local model's embeddings of the labelled reports of
bench/data/enrichment (each a mix of two reports' embeddings plus noise, unit length), so the index sees
clusters as real reports make, not uniform noise, which no index is built for. The rows are loaded with
COPY and the HNSW index of migration 0023 is built once they are in (as an operator would for a bulk
import; the index itself is the migration's, same definition). `--data DIR` keeps the loaded server in
DIR and reuses it on the next run (a load of 1M rows and its index takes a while on a small machine).

The server gets `shared_buffers` of `--shared-buffers` (4GB by default), as an operator sizes a server
that serves an HNSW index: pgvector's answer time depends on the index being in memory (at 1M rows the
index is ~2 GB and the vectors' table ~1.6 GB), and the embedded server's default (128MB, enough for
`relay dev`) holds a sixteenth of it. The calls are timed twice: right after the server starts, when
most index pages a call visits are read from the operating system (~1,000 of ~1,700 at 1M), and after
`WARM` calls on other interactions have brought the index into shared buffers, the state of a server
that answers `similar` all day (the goal's figure; pg_prewarm is not in the embedded server).

Then the endpoint's database work runs for random interactions of the project, one call at a time, as
the handler does it (`cell.interactions.duplicates.suggest`: one statement that finds the interaction's
vector, leaves out what a person dismissed, asks the index for `index.CANDIDATES` rows, re-ranks them by
CSLS and joins the rows and their logs, as GET shows them), on a pool set up as the cell's: p50 and p99 in
ms (the router and HTTP add about a millisecond, measured in bench/router.py). Side by side, call for
call, the same work as the handler did it before (`before`: seven round trips, the vector sent back and
forth as text, ef_search 200, the rows and logs read in two more statements), so that the ratio holds on
a loaded machine. Recall@10 of the index's candidates against an exact scan over the same rows is measured
on a sample. The exact path a Postgres without pgvector takes scans at most `index.EXACT_LIMIT` vectors,
so its time does not grow with the project: it is measured too, on the machine's Postgres when one
answers on 5432, with one project of EXACT_LIMIT + 1000 vectors.

RESULT lines: `similar.p50_ms`, `similar.p99_ms` (HNSW, the handler, index resident),
`similar.before_p50_ms`, `similar.before_p99_ms` (the same calls the way the handler did them before),
`similar.cold_p50_ms`, `similar.cold_p99_ms`, `similar.cold_before_p99_ms` (right after start),
`similar.recall_at_10`, `similar.exact_p99_ms`.
"""

from __future__ import annotations

import asyncio
import json
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
from cell.interactions import duplicates, groups, queries
from common.migrate import migrate
from common.pg import create_pool
from relay.cli import MIGRATIONS
from relay.embedded import PostgresServer

ROWS = 1_000_000
BATCH = 20_000
CALLS = 400
LIMIT = 10
SHARED_BUFFERS = "4GB"
WARM = 5000

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


LOGS = json.dumps({"console": [{"level": "error", "message": "TypeError: x is undefined"}],
                   "network": [{"method": "GET", "url": "https://api.example/v1/items", "status": 500,
                                "duration": 120}],
                   "errors": [{"message": "TypeError: x is undefined", "stack": "at f (app.js:1:2)"}]})


async def load(dsn: str, pid: uuid.UUID, base: Matrix, rows: int, *, hnsw: bool) -> list[uuid.UUID]:
    """`rows` interactions of project `pid` (logs for every fourth) and their vectors with a hubness; their
    ids."""
    conn = await asyncpg.connect(dsn)
    if hnsw:
        await conn.set_type_codec("vector", schema="public", format="binary", encoder=_encode,
                                  decoder=lambda raw: raw)
    start = datetime.now(UTC) - timedelta(days=365)
    rng = np.random.default_rng(0)
    ids: list[uuid.UUID] = []
    try:
        for offset in range(0, rows, BATCH):
            n = min(BATCH, rows - offset)
            batch = [uuid.uuid4() for _ in range(n)]
            at = [start + timedelta(seconds=30 * (offset + i)) for i in range(n)]
            content = [json.dumps({"title": f"Report {offset + i}", "description": "The export button does "
                                   "nothing when I press it, no file is downloaded. " * 3}) for i in range(n)]
            await conn.copy_records_to_table(
                "interactions", columns=["id", "project_id", "type", "content_text", "content_json", "created_at"],
                records=[(i, pid, "bug", "synthetic report", c, t) for i, c, t in zip(batch, content, at, strict=True)])
            await conn.copy_records_to_table(
                "interaction_logs", columns=["id", "project_id", "interaction_id", "console", "network", "errors",
                                             "created_at"],
                records=[(uuid.uuid4(), pid, i, *(json.dumps(json.loads(LOGS)[k]) for k in
                                                   ("console", "network", "errors")), t)
                         for i, t in list(zip(batch, at, strict=True))[::4]])
            v = vectors(base, n, offset)
            r = rng.uniform(0.35, 0.7, n).astype(np.float32)  # hubness: the values only need to be there
            column = "embedding" if hnsw else "unit"
            await conn.copy_records_to_table(
                "interaction_vectors", columns=["project_id", "interaction_id", "model", column, "created_at",
                                                "hubness"],
                records=[(pid, i, embedding.MODEL, v[k] if hnsw else v[k].astype("<f4").tobytes(), at[k], float(r[k]))
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
        await conn.execute("VACUUM ANALYZE interaction_vectors")
        await conn.execute("VACUUM ANALYZE interactions")
        await conn.execute("VACUUM ANALYZE interaction_logs")
        return time.perf_counter() - began
    finally:
        await conn.close()


async def before(conn: asyncpg.Connection, which: index.Index, pid: uuid.UUID, iid: uuid.UUID) -> int:
    """The handler's database work as it was before this benchmark's figures were taken, for the side-by-side
    ratio: existence, the vector as text, the dismissals, a count for the small-project check, a transaction
    with ef_search 200 and no sort, the rows, their logs. How many suggestions."""
    await conn.fetchval("SELECT EXISTS (SELECT 1 FROM interactions WHERE project_id = $1 AND id = $2)", pid, iid)
    found = await index.vector_of(conn, which, pid, iid)
    assert found is not None
    model, query = found
    exclude = [iid, *await groups.dismissed_with(conn, pid, iid)]
    small = await conn.fetchval(
        """SELECT count(*) FROM (SELECT 1 FROM interaction_vectors
                                  WHERE project_id = $1 AND model = $2 LIMIT $3) s""",
        pid, model, index.EXACT_LIMIT + 1) <= index.EXACT_LIMIT
    if not which.hnsw:
        stored = await conn.fetch(
            """SELECT interaction_id, unit FROM interaction_vectors WHERE project_id = $1 AND model = $2
                AND unit IS NOT NULL ORDER BY created_at DESC LIMIT $3""", pid, model, index.EXACT_LIMIT)
        kept = [r for r in stored if r["interaction_id"] not in exclude]
        matrix = np.frombuffer(b"".join(r["unit"] for r in kept), dtype="<f4").reshape(len(kept), len(query))
        top = np.argsort(-(matrix @ query), kind="stable")[:LIMIT]
        return await _rows(conn, pid, [kept[n]["interaction_id"] for n in top])
    order = "(embedding <#> $3::vector) + 0" if small else "embedding <#> $3::vector"
    async with conn.transaction():
        await conn.execute("SET LOCAL hnsw.ef_search = 200")
        if not small:
            await conn.execute("SET LOCAL enable_sort = off")
        near = await conn.fetch(
            f"""SELECT interaction_id, -(embedding <#> $3::vector) AS cosine FROM interaction_vectors
                 WHERE project_id = $1 AND model = $2 AND embedding IS NOT NULL
                   AND NOT (interaction_id = ANY($4::uuid[]))
                 ORDER BY {order} LIMIT $5""",
            pid, model, index.literal(query), exclude, LIMIT)
    return await _rows(conn, pid, [r["interaction_id"] for r in near])


async def _rows(conn: asyncpg.Connection, pid: uuid.UUID, ids: list[uuid.UUID]) -> int:
    rows = await conn.fetch(f"SELECT {queries.COLUMNS} FROM interactions WHERE project_id = $1 AND id = ANY($2)",
                            pid, ids)
    await conn.fetch(
        """SELECT DISTINCT ON (interaction_id) interaction_id, console, network, errors FROM interaction_logs
            WHERE project_id = $1 AND interaction_id = ANY($2) ORDER BY interaction_id, created_at""", pid, ids)
    return len(rows)


async def calls(dsn: str, which: index.Index, pid: uuid.UUID, sample: list[uuid.UUID]) -> tuple[list[float],
                                                                                                list[float]]:
    """The handler's database work (`duplicates.suggest`) and the same the way it was done `before`, call for
    call in alternating order, on a pool set up as the cell's; milliseconds each (now, before)."""
    pool = await create_pool(dsn, 2)
    now: list[float] = []
    old: list[float] = []
    try:
        for n, iid in enumerate(sample):
            for which_way in ((0, 1) if n % 2 else (1, 0)):
                began = time.perf_counter()
                async with pool.acquire() as conn:
                    if which_way == 0:
                        found = await duplicates.suggest(conn, which, pid, iid, LIMIT)
                        assert found is not None and len(found) == LIMIT, found
                    else:
                        assert await before(conn, which, pid, iid) == LIMIT
                (now if which_way == 0 else old).append((time.perf_counter() - began) * 1000)
    finally:
        await pool.close()
    return now, old


async def warm(dsn: str, which: index.Index, pid: uuid.UUID, measured: list[uuid.UUID]) -> None:
    """`WARM` calls of the handler on other interactions of the project: a server that answers `similar`
    all day has the index's pages in shared buffers (pg_prewarm is not in the embedded server), and this
    brings the benchmark's there. The measured calls are not among these."""
    pool = await create_pool(dsn, 2)
    try:
        ids = [r["interaction_id"] for r in await pool.fetch(
            """SELECT interaction_id FROM interaction_vectors TABLESAMPLE SYSTEM (2)
                WHERE project_id = $1 AND interaction_id <> ALL($3::uuid[]) LIMIT $2""", pid, WARM, measured)]
        async with pool.acquire() as conn:
            for iid in ids:
                await duplicates.suggest(conn, which, pid, iid, LIMIT)
    finally:
        await pool.close()


async def recall(dsn: str, pid: uuid.UUID, sample: list[uuid.UUID]) -> float:
    """Share of the exact 10 nearest (by cosine) that the index's candidates hold, at the handler's
    ef_search."""
    conn = await asyncpg.connect(dsn)
    hnsw = index.Index("hnsw")
    hits = total = 0
    try:
        for iid in sample:
            found = await index.vector_of(conn, hnsw, pid, iid)
            assert found is not None
            got = {n.interaction_id for n in await index.nearest(conn, hnsw, pid, found[0], found[1], [iid],
                                                                 index.CANDIDATES)}
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


def _arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


async def _populate(dsn: str, base: Matrix, rows: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A new project of `rows` interactions with their vectors and the HNSW index; its id and a sample of
    its interactions."""
    await migrate(dsn, MIGRATIONS["cell"])
    conn = await asyncpg.connect(dsn)
    pid = await _project(conn)
    await conn.close()
    definition = await drop_index(dsn)
    began = time.perf_counter()
    ids = await load(dsn, pid, base, rows, hnsw=True)
    print(f"loaded {rows:,} interactions and vectors in {time.perf_counter() - began:.0f} s", flush=True)
    built = await build_index(dsn, definition)
    print(f"HNSW index (m=16, ef_construction=64) built in {built:.0f} s", flush=True)
    return pid, random.Random(1).sample(ids, CALLS + 50)


async def hnsw_path(base: Matrix, rows: int, data: Path | None, shared_buffers: str) -> None:
    """The path of a Postgres with pgvector: the embedded server, at `rows` interactions (in `data`, kept
    and reused when given)."""
    where = data or Path(tempfile.mkdtemp(prefix="relay-bench-similar-"))
    kept = where / f"loaded-{rows}.json"
    server = PostgresServer(where / "pg", durable=False, settings={"shared_buffers": shared_buffers}).start()
    try:
        dsn = server.url
        if kept.exists():
            saved = json.loads(kept.read_text())
            pid, sample = uuid.UUID(saved["project"]), [uuid.UUID(i) for i in saved["sample"]]
            await migrate(dsn, MIGRATIONS["cell"])
            print(f"reusing {rows:,} interactions in {where}", flush=True)
        else:
            pid, sample = await _populate(dsn, base, rows)
            if data is not None:
                kept.write_text(json.dumps({"project": str(pid), "sample": [str(i) for i in sample]}))
        conn = await asyncpg.connect(dsn)
        which = await index.detect(conn)
        await conn.close()
        if not which.hnsw:
            sys.exit("bench/similar: the embedded Postgres has no pgvector")
        await calls(dsn, which, pid, sample[CALLS:])  # the connections, the catalog, the upper layers
        cold, cold_old = await calls(dsn, which, pid, sample[:CALLS])
        began = time.perf_counter()
        await warm(dsn, which, pid, sample)
        print(f"warmed with {WARM:,} calls on other interactions in {time.perf_counter() - began:.0f} s", flush=True)
        took, old = await calls(dsn, which, pid, sample[:CALLS])
        rec = await recall(dsn, pid, sample[:100])
        print(f"similar over {rows:,} interactions in one project (HNSW, ef_search {index.EF_SEARCH}, "
              f"shared_buffers {shared_buffers}), {CALLS} calls each, alternating with the way before:\n"
              f"  index read from the OS (after start): now p50 {percentile(cold, 50):.2f} ms, p99 "
              f"{percentile(cold, 99):.2f} ms; before p50 {percentile(cold_old, 50):.2f} ms, p99 "
              f"{percentile(cold_old, 99):.2f} ms\n"
              f"  index resident (steady state):        now p50 {percentile(took, 50):.2f} ms, p99 "
              f"{percentile(took, 99):.2f} ms; before p50 {percentile(old, 50):.2f} ms, p99 "
              f"{percentile(old, 99):.2f} ms\n"
              f"  recall@{LIMIT} of the {index.CANDIDATES} candidates vs exact {rec:.3f}")
        result("similar.p50_ms", percentile(took, 50), "ms")
        result("similar.p99_ms", percentile(took, 99), "ms")
        result("similar.before_p50_ms", percentile(old, 50), "ms")
        result("similar.before_p99_ms", percentile(old, 99), "ms")
        result("similar.cold_p50_ms", percentile(cold, 50), "ms")
        result("similar.cold_p99_ms", percentile(cold, 99), "ms")
        result("similar.cold_before_p99_ms", percentile(cold_old, 99), "ms")
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
    took, old = await calls(dsn, which, pid, sample)
    print(f"similar without pgvector (exact scan of the newest {index.EXACT_LIMIT}): "
          f"p50 {percentile(took, 50):.2f} ms, p99 {percentile(took, 99):.2f} ms "
          f"(before: {percentile(old, 50):.2f} / {percentile(old, 99):.2f} ms)")
    result("similar.exact_p99_ms", percentile(took, 99), "ms")


def main() -> None:
    rows = int(_arg("--rows", str(ROWS)))
    data = Path(_arg("--data", "")) if "--data" in sys.argv else None
    reports = labelled.load()
    labelled.embed(reports)
    base = np.array([r.embedding for r in reports if r.embedding is not None], dtype=np.float32)
    asyncio.run(hnsw_path(base, rows, data, _arg("--shared-buffers", SHARED_BUFFERS)))
    if "--no-exact" in sys.argv:
        return
    from tests.services import StorePostgres  # the suite's way to find the machine's Postgres

    store = StorePostgres(Path(tempfile.mkdtemp(prefix="relay-bench-similar-exact-")))
    try:
        asyncio.run(exact_path(store.database("bench_similar_exact"), base))
    finally:
        store.close()


if __name__ == "__main__":
    main()
