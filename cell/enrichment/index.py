"""The similarity index: each enriched interaction's unit vector, and its nearest neighbours in its project.

Where the database has pgvector (migration 0023 added the `embedding vector(384)` column and its HNSW
index), vectors of that many dimensions are stored there and a project's neighbours come from the index
— logarithmic in the project's size, so `GET …/similar` stays fast at millions of interactions. A small
project (at most `EXACT_LIMIT` vectors) is scanned exactly instead: HNSW filters by project after
searching the whole table, so a small project among large ones would get too few answers from it. Where
the database has no pgvector, vectors are stored as float32 bytes and the newest `EXACT_LIMIT` of the
project are scanned exactly in numpy (older ones are not suggested: a bound on the time a request takes,
stated here rather than discovered). Which path a process takes is read from the database once, at start
(`detect`), never guessed from the configuration.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
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
EF_SEARCH = 200
"""HNSW candidate list per query (pgvector's `hnsw.ef_search`): enough for 50 answers after filtering by
project and model, at a fraction of a millisecond per extra candidate."""

Kind = Literal["hnsw", "exact"]
Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Neighbour:
    """An interaction near the query, and the cosine similarity of their vectors."""

    interaction_id: uuid.UUID
    cosine: float


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


async def store(conn: asyncpg.Connection, index: Index, project_id: uuid.UUID, interaction_id: uuid.UUID,
                model: str, vector: list[float], created_at: datetime) -> None:
    """Index an interaction's vector (again: a re-signed interaction replaces its entry)."""
    v = unit(vector)
    if index.hnsw and len(v) == DIMENSIONS:
        await conn.execute(
            """INSERT INTO interaction_vectors (project_id, interaction_id, model, embedding, created_at)
               VALUES ($1, $2, $3, $4::vector, $5)
               ON CONFLICT (project_id, interaction_id)
               DO UPDATE SET model = excluded.model, embedding = excluded.embedding, unit = NULL""",
            project_id, interaction_id, model, literal(v), created_at)
        return
    await conn.execute(
        """INSERT INTO interaction_vectors (project_id, interaction_id, model, unit, created_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (project_id, interaction_id) DO UPDATE SET model = excluded.model, unit = excluded.unit""",
        project_id, interaction_id, model, v.astype("<f4").tobytes(), created_at)


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


async def nearest(conn: asyncpg.Connection, index: Index, project_id: uuid.UUID, model: str, query: Vector,
                  exclude: list[uuid.UUID], k: int) -> list[Neighbour]:
    """The project's `k` interactions whose vectors (of `model`) are closest to `query`, closest first,
    without those in `exclude`. `conn` must not be inside a transaction (the HNSW path opens its own)."""
    if index.hnsw and len(query) == DIMENSIONS:
        small = await conn.fetchval(
            """SELECT count(*) FROM (SELECT 1 FROM interaction_vectors
                                      WHERE project_id = $1 AND model = $2 LIMIT $3) s""",
            project_id, model, EXACT_LIMIT + 1) <= EXACT_LIMIT
        # The distance is `<#>`, the negative inner product (the index's operator): the cosine of unit vectors.
        # `+ 0` keeps the planner off the index for the exact scan of a small project.
        order = "(embedding <#> $3::vector) + 0" if small else "embedding <#> $3::vector"
        async with conn.transaction():
            await conn.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k)}")
            if not small:  # the index gives the order: a plan that sorts the project's rows is what to avoid
                await conn.execute("SET LOCAL enable_sort = off")
            rows = await conn.fetch(
                f"""SELECT interaction_id, -(embedding <#> $3::vector) AS cosine FROM interaction_vectors
                     WHERE project_id = $1 AND model = $2 AND embedding IS NOT NULL
                       AND NOT (interaction_id = ANY($4::uuid[]))
                     ORDER BY {order} LIMIT $5""",
                project_id, model, literal(query), exclude, k)
        return [Neighbour(r["interaction_id"], float(r["cosine"])) for r in rows]
    rows = await conn.fetch(
        """SELECT interaction_id, unit FROM interaction_vectors
            WHERE project_id = $1 AND model = $2 AND unit IS NOT NULL
            ORDER BY created_at DESC LIMIT $3""", project_id, model, EXACT_LIMIT)
    return exact(query, [(r["interaction_id"], r["unit"]) for r in rows], set(exclude), k)


def exact(query: Vector, stored: list[tuple[uuid.UUID, bytes]], exclude: set[uuid.UUID],
          k: int) -> list[Neighbour]:
    """The `k` stored vectors (float32 bytes) closest to `query` by cosine, closest first."""
    kept = [(i, raw) for i, raw in stored if i not in exclude and len(raw) == 4 * len(query)]
    if not kept or k <= 0:
        return []
    matrix = np.frombuffer(b"".join(raw for _, raw in kept), dtype="<f4").reshape(len(kept), len(query))
    scores = matrix @ query.astype(np.float32)
    top = np.argsort(-scores, kind="stable")[:k]
    return [Neighbour(kept[i][0], float(scores[i])) for i in top]
