"""The similarity index: each enriched interaction's unit vector, and its nearest neighbours in its project.

Where the database has pgvector (migration 0023 added the `embedding vector(384)` column and its HNSW
index), vectors of that many dimensions are stored there and a project's neighbours come from the index
— logarithmic in the project's size, so `GET …/similar` stays fast at millions of interactions. A small
project (at most `EXACT_LIMIT` vectors) is scanned exactly instead: HNSW filters by project after
searching the whole table, so a small project among large ones would get too few answers from it. Where
the database has no pgvector, vectors are stored as float32 bytes and the newest `EXACT_LIMIT` of the
project are scanned exactly in numpy (older ones are not suggested: a bound on the time a request takes,
stated here rather than discovered). Which path a process takes is read from the database once, at start
(`detect`), never guessed from the configuration. The HNSW path's time depends on the index being in
memory: ~2 GB of index per million vectors, which the server's shared_buffers should hold (bench/similar.py
at 1M rows: p99 22 ms with 4GB, 140–170 ms with 128MB, under the same load).

Suggestions are ranked by CSLS (cross-domain similarity local scaling, Conneau et al. 2018), not by the
raw cosine: score(q, x) = cos(q, x) − r(x)/2, where r(x), the row's `hubness` (migration 0026), is the
mean cosine of x to its `HUB_K` nearest neighbours in the project. In a space of sentence embeddings some
vectors — short or generic reports, the app's own vocabulary — are near everything ("hubs") and crowd the
top of every list; r(x) measures exactly that closeness and takes it back. It needs no other model, and
its `k` (10) is the published default, which is also the best of those tried on the tuning parts of
bench/enrichment.py (see its docstring for the figures and what was seen of the blind parts). The
cosine still picks the `CANDIDATES` that are re-ranked. The score a suggestion shows is
cos(q, x) − (r(x) − r(q))/2, clamped to 0–1: r(q) is the same for every row of one list, so it does not
change the order, and it keeps the score near the cosine, so scores fall in the list's order.

In the HNSW column r(x) is kept as new vectors arrive, in the enrichment job's transaction under the
project's lock (`store`, one more index query and one update per stored vector): the new row's list is
its cosines to its nearest rows, and each of its `REVERSE` nearest rows takes the new cosine into its own
list when it is among that row's `HUB_K` best. Rows erased later stay in their neighbours' lists (r a
little high there until those rows are stored again). The exact scan reads the vectors anyway, so it
computes its candidates' r from them (`exact`) and nothing is kept for vectors stored as bytes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

import asyncpg
import numpy as np
import numpy.typing as npt

DIMENSIONS = 384
"""The `embedding` column's dimensions (migration 0023): the local model's. Vectors of other models (an
external provider's) are kept as bytes and scanned exactly."""
EXACT_LIMIT = 5000
"""Vectors scanned exactly: every vector of a project that has at most this many, and on a database without
pgvector the project's newest this many (~8 MB read, a few milliseconds of numpy)."""
HUB_K = 10
"""Neighbours whose mean cosine is a row's hubness r(x) (CSLS's k)."""
CANDIDATES = 50
"""Rows nearest by cosine that are re-ranked by CSLS: r(x)/2 rarely moves a row further than this."""
REVERSE = 30
"""Rows near a newly stored vector that take its cosine into their neighbour lists: the rows that have the
new one among their `HUB_K` nearest are, nearly always, among its own nearest this many."""
EF_SEARCH = 200
"""HNSW candidate list per query (pgvector's `hnsw.ef_search`), at least `CANDIDATES`. bench/similar.py
measures the recall@10 of the candidates against an exact scan: at 200k rows 0.92 with 100, 0.94 with 200,
0.97 with 400; the statement took 0.6, 0.95 and 3.2 ms (median, its pages in shared buffers)."""
LARGE_TTL = 300.0
"""Seconds a project found too large for the exact scan is remembered so (the count is not repeated per
request; a project rarely shrinks, and one that did still gets answers from the index)."""

Kind = Literal["hnsw", "exact"]
Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Neighbour:
    """An interaction near the query, the cosine similarity of their vectors, and its hubness r(x) (None
    when it was indexed before hubness was kept)."""

    interaction_id: uuid.UUID
    cosine: float
    hubness: float | None = None
    score: float | None = None
    """Set by `rank`: cos − (r(x) − r(q))/2, the cosine corrected for both sides' hubness, what a
    suggestion shows (its order is CSLS's, r(q) being one for all)."""


@dataclass(frozen=True)
class Index:
    """What this database offers: `hnsw` (pgvector, migration 0023's column present) or `exact`."""

    kind: Kind

    @property
    def hnsw(self) -> bool:
        return self.kind == "hnsw"


async def detect(conn: asyncpg.Connection | asyncpg.Pool) -> Index:
    """Read which index migration 0023 could build here."""
    found = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM pg_attribute
                           WHERE attrelid = 'interaction_vectors'::regclass AND attname = 'embedding'
                             AND NOT attisdropped)""")
    return Index("hnsw" if found else "exact")


def unit(vector: list[float] | Vector) -> Vector:
    """The vector as float32, L2-normalised (a zero vector stays zero)."""
    a = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(a))
    return a / norm if norm else a


def literal(vector: Vector) -> str:
    """pgvector's text form of a vector (`[x,y,…]`), for a `$n::vector` parameter."""
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


# CSLS ---------------------------------------------------------------------------------------------------------


def remember(cosines: Sequence[float] | None, new: float) -> list[float]:
    """A neighbour list (best first, at most `HUB_K`) with the cosine of one more neighbour taken in."""
    return sorted([*(cosines or ()), new], reverse=True)[:HUB_K]


def hubness(cosines: Sequence[float]) -> float | None:
    """r(x): the mean of a row's neighbour cosines (None without neighbours)."""
    return float(np.mean(cosines)) if len(cosines) else None


def rank(candidates: Sequence[Neighbour], k: int, query_hubness: float | None = None) -> list[Neighbour]:
    """The `k` best of the candidates by CSLS, cos − r(x)/2, best first (ties: the higher cosine), each with
    its `score`. A candidate (or the query) without a hubness is given the candidates' mean, so it is
    neither favoured nor pushed down. The SQL of `ranked_sql` computes the same."""
    known = [c.hubness for c in candidates if c.hubness is not None]
    neutral = float(np.mean(known)) if known else 0.0
    r_q = neutral if query_hubness is None else query_hubness
    scored = [replace(c, score=c.cosine - ((neutral if c.hubness is None else c.hubness) - r_q) / 2)
              for c in candidates]
    return sorted(scored, key=lambda c: (c.score, c.cosine), reverse=True)[:max(k, 0)]


# Writing ------------------------------------------------------------------------------------------------------


async def store(conn: asyncpg.Connection, index: Index, project_id: uuid.UUID, interaction_id: uuid.UUID,
                model: str, vector: list[float], created_at: datetime) -> None:
    """Index an interaction's vector (again: a re-signed interaction replaces its entry). In the HNSW column,
    with its neighbour cosines and hubness from its nearest rows, and its cosine taken into theirs; run
    under the project's enrichment lock (the job's transaction), so two stores of one project do not update
    the same lists at once. A vector kept as bytes has no list: the exact scan computes the hubness of its
    candidates from the vectors it reads anyway (`exact`)."""
    v = unit(vector)
    if not (index.hnsw and len(v) == DIMENSIONS):
        await conn.execute(
            """INSERT INTO interaction_vectors (project_id, interaction_id, model, unit, created_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (project_id, interaction_id) DO UPDATE SET model = excluded.model, unit = excluded.unit""",
            project_id, interaction_id, model, v.astype("<f4").tobytes(), created_at)
        return
    near = await nearest(conn, index, project_id, model, v, [interaction_id], max(REVERSE, HUB_K))
    own = sorted((n.cosine for n in near), reverse=True)[:HUB_K]
    inserted = await conn.fetchval(
        """INSERT INTO interaction_vectors (project_id, interaction_id, model, embedding, created_at,
                                            neighbour_cosines, hubness)
           VALUES ($1, $2, $3, $4::vector, $5, $6, $7)
           ON CONFLICT (project_id, interaction_id)
           DO UPDATE SET model = excluded.model, embedding = excluded.embedding, unit = NULL,
                         neighbour_cosines = excluded.neighbour_cosines, hubness = excluded.hubness
           RETURNING xmax = 0""",
        project_id, interaction_id, model, literal(v), created_at, own, hubness(own))
    if not inserted:
        return  # stored again (re-signed): its neighbours have its cosine already
    # The rows near the new one: its cosine joins their lists where it is among their HUB_K best.
    lists = await conn.fetch(
        """SELECT interaction_id, neighbour_cosines FROM interaction_vectors
            WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])""",
        project_id, [n.interaction_id for n in near])
    cosine_of = {n.interaction_id: n.cosine for n in near}
    changed = []
    for row in lists:
        old = row["neighbour_cosines"]
        new = remember(old, cosine_of[row["interaction_id"]])
        if old is None or list(old) != new:
            changed.append((row["interaction_id"], new, hubness(new)))
    if changed:
        await conn.executemany(
            """UPDATE interaction_vectors SET neighbour_cosines = $3, hubness = $4
                WHERE project_id = $1 AND interaction_id = $2""",
            [(project_id, iid, cosines, r) for iid, cosines, r in changed])


# Reading ------------------------------------------------------------------------------------------------------


async def vector_of(conn: asyncpg.Connection | asyncpg.Pool, index: Index, project_id: uuid.UUID,
                    interaction_id: uuid.UUID) -> tuple[str, Vector] | None:
    """An interaction's indexed model and vector; None when it has none (not enriched yet, or no words)."""
    column = "coalesce(embedding::text, '')" if index.hnsw else "''"
    row = await conn.fetchrow(
        f"""SELECT model, unit, {column} AS text FROM interaction_vectors
             WHERE project_id = $1 AND interaction_id = $2""", project_id, interaction_id)
    if row is None:
        return None
    if row["unit"] is not None:
        return row["model"], np.frombuffer(row["unit"], dtype="<f4")
    return row["model"], np.array(row["text"].strip("[]").split(","), dtype=np.float32)


_large: dict[uuid.UUID, float] = {}


async def small(conn: asyncpg.Connection, project_id: uuid.UUID) -> bool:
    """Whether the project has at most `EXACT_LIMIT` vectors in the HNSW column (then it is scanned exactly).
    A project found larger is remembered for `LARGE_TTL` seconds; a small one is counted each time (a count
    of at most EXACT_LIMIT + 1 index entries, less than its exact scan)."""
    seen = _large.get(project_id)
    if seen is not None and time.monotonic() - seen < LARGE_TTL:
        return False
    few: bool = await conn.fetchval(
        """SELECT count(*) <= $2 FROM (SELECT 1 FROM interaction_vectors
                                        WHERE project_id = $1 AND embedding IS NOT NULL LIMIT $2 + 1) s""",
        project_id, EXACT_LIMIT)
    if not few:
        if len(_large) > 10_000:
            _large.clear()
        _large[project_id] = time.monotonic()
    return few


def ranked_sql(exact_scan: bool) -> str:
    """The HNSW path of `GET …/similar` as one statement: the interaction's own vector and model, the
    suggestions a person dismissed, its `CANDIDATES` nearest rows by cosine from the index (or, for a small
    project, an exact scan: `+ 0` keeps the planner off the index), re-ranked by CSLS as `rank` does.
    Parameters: $1 project, $2 interaction, $3 how many; columns interaction_id, cosine, score (`rank`'s).
    Empty when
    the interaction has no vector in the HNSW column. Run it after `SET LOCAL hnsw.ef_search` (`settings`)."""
    distance = "v.embedding <#> (SELECT embedding FROM q)"
    order = f"({distance}) + 0" if exact_scan else distance
    return f"""
        WITH q AS MATERIALIZED (
            SELECT model, embedding, hubness FROM interaction_vectors
             WHERE project_id = $1 AND interaction_id = $2 AND embedding IS NOT NULL),
        dismissed AS MATERIALIZED (
            SELECT coalesce(array_agg(id), '{{}}') AS ids FROM (
                SELECT other_id AS id FROM duplicate_dismissals WHERE project_id = $1 AND interaction_id = $2
                UNION ALL
                SELECT interaction_id FROM duplicate_dismissals WHERE project_id = $1 AND other_id = $2) d),
        candidates AS MATERIALIZED (
            -- `<#>` is the negative inner product (the index's operator): the cosine of unit vectors.
            SELECT v.interaction_id, -(v.embedding <#> (SELECT embedding FROM q)) AS cosine, v.hubness
              FROM interaction_vectors v
             WHERE v.project_id = $1 AND v.model = (SELECT model FROM q) AND v.embedding IS NOT NULL
               AND v.interaction_id <> $2 AND v.interaction_id <> ALL ((SELECT ids FROM dismissed)::uuid[])
             ORDER BY {order} LIMIT {CANDIDATES})
        SELECT interaction_id, cosine,
               cosine - (coalesce(hubness, avg(hubness) OVER (), 0)
                         - coalesce((SELECT hubness FROM q), avg(hubness) OVER (), 0)) / 2 AS score
          FROM candidates ORDER BY score DESC, cosine DESC LIMIT $3"""


def settings(exact_scan: bool) -> str:
    """The `SET LOCAL`s the HNSW statement runs under: the candidate list, and no sort plan for a large
    project (the index gives the order: a plan that sorts the project's rows is what to avoid)."""
    return f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, CANDIDATES)}" + (
        "" if exact_scan else "; SET LOCAL enable_sort = off")


async def nearest(conn: asyncpg.Connection, index: Index, project_id: uuid.UUID, model: str, query: Vector,
                  exclude: list[uuid.UUID], k: int) -> list[Neighbour]:
    """The project's `k` interactions whose vectors (of `model`) are closest to `query` by cosine, closest
    first, without those in `exclude`, with their hubness. Inside a transaction or not."""
    if index.hnsw and len(query) == DIMENSIONS:
        exact_scan = await small(conn, project_id)
        order = "(embedding <#> $3::vector) + 0" if exact_scan else "embedding <#> $3::vector"
        async with conn.transaction():
            await conn.execute(settings(exact_scan))
            rows = await conn.fetch(
                f"""SELECT interaction_id, -(embedding <#> $3::vector) AS cosine, hubness FROM interaction_vectors
                     WHERE project_id = $1 AND model = $2 AND embedding IS NOT NULL
                       AND NOT (interaction_id = ANY($4::uuid[]))
                     ORDER BY {order} LIMIT $5""",
                project_id, model, literal(query), exclude, k)
            # SET LOCAL lasts to the end of the outer transaction when there is one (a savepoint here).
            await conn.execute("RESET enable_sort")
        return [Neighbour(r["interaction_id"], float(r["cosine"]), r["hubness"]) for r in rows]
    rows = await conn.fetch(
        """SELECT interaction_id, unit FROM interaction_vectors
            WHERE project_id = $1 AND model = $2 AND unit IS NOT NULL
            ORDER BY created_at DESC LIMIT $3""", project_id, model, EXACT_LIMIT)
    return exact(query, [(r["interaction_id"], r["unit"]) for r in rows], set(exclude), k)[0]


async def similar(conn: asyncpg.Connection, index: Index, project_id: uuid.UUID, interaction_id: uuid.UUID,
                  model: str, query: Vector, exclude: list[uuid.UUID], k: int) -> list[Neighbour]:
    """The `k` suggestions for an interaction's vector `query`: its `CANDIDATES` nearest by cosine (without
    itself and those in `exclude`), re-ranked by CSLS (`rank`). The path of a vector outside the HNSW column
    (no pgvector, or another model's dimensions); the HNSW path runs `ranked_sql` as one statement, which
    this matches there."""
    if index.hnsw and len(query) == DIMENSIONS:
        near = await nearest(conn, index, project_id, model, query, [interaction_id, *exclude], max(CANDIDATES, k))
        own = await conn.fetchval("SELECT hubness FROM interaction_vectors WHERE project_id = $1 "
                                  "AND interaction_id = $2", project_id, interaction_id)
        return rank(near, k, own)
    rows = await conn.fetch(
        """SELECT interaction_id, unit FROM interaction_vectors
            WHERE project_id = $1 AND model = $2 AND unit IS NOT NULL
            ORDER BY created_at DESC LIMIT $3""", project_id, model, EXACT_LIMIT)
    near, own = exact(query, [(r["interaction_id"], r["unit"]) for r in rows], {interaction_id, *exclude},
                      max(CANDIDATES, k), itself=interaction_id)
    return rank(near, k, own)


def exact(query: Vector, stored: list[tuple[uuid.UUID, bytes]], exclude: set[uuid.UUID], k: int, *,
          itself: uuid.UUID | None = None) -> tuple[list[Neighbour], float | None]:
    """The `k` stored vectors (float32 bytes) closest to `query` by cosine, closest first, without those in
    `exclude`, each with its hubness among the stored vectors (the mean cosine to its `HUB_K` nearest of
    them): what the HNSW path keeps per row, computed here from the vectors at hand. Also the query's own
    hubness among them, not counting the stored vector `itself`. Two products: the query against all, then
    the k found and the query against all (k × n, a fraction of the scan)."""
    rows = [(i, raw) for i, raw in stored if len(raw) == 4 * len(query)]
    if not rows or k <= 0:
        return [], None
    matrix = np.frombuffer(b"".join(raw for _, raw in rows), dtype="<f4").reshape(len(rows), len(query))
    q = query.astype(np.float32)
    scores = matrix @ q
    allowed = scores.copy()
    allowed[[n for n, (i, _) in enumerate(rows) if i in exclude]] = -np.inf
    top = [int(n) for n in np.argsort(-allowed, kind="stable")[:k] if allowed[n] != -np.inf]
    products = np.vstack([q[None, :], matrix[top]]) @ matrix.T
    products[np.arange(1, len(top) + 1), top] = -np.inf  # a row is not its own neighbour
    products[0, [n for n, (i, _) in enumerate(rows) if i == itself]] = -np.inf
    width = min(HUB_K, len(rows) - 1)
    if width <= 0:
        return [Neighbour(rows[n][0], float(scores[n])) for n in top], None
    hubs = (-np.partition(-products, width - 1, axis=1)[:, :width]).mean(axis=1)
    return [Neighbour(rows[n][0], float(scores[n]), float(r)) for n, r in zip(top, hubs[1:], strict=True)], \
        float(hubs[0])
