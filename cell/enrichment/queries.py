"""SQL of the enrichment job: the interaction to read, the signatures to compare with, and the write."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from cell.enrichment.grouping import Candidate, Signature, SignatureCache, Window

LOGS = """LEFT JOIN LATERAL (SELECT console, network, errors FROM interaction_logs
                                 WHERE project_id = i.project_id AND interaction_id = i.id
                                 ORDER BY created_at LIMIT 1) l ON true"""
"""The logs sent with interaction `i` (ingest stores one row per interaction), as columns of `l`."""


def _logs(row: asyncpg.Record) -> dict[str, Any] | None:
    """The logs a row joined through `LOGS` carries, as `document` takes them; None without any."""
    if row["errors"] is None:
        return None
    return {"console": row["console"], "network": row["network"], "errors": row["errors"]}


@dataclass
class Loaded:
    """An interaction as the job reads it."""

    project_id: uuid.UUID
    type: str
    content: dict[str, Any]
    content_text: str | None
    created_at: datetime
    logs: dict[str, Any] | None
    enriched: bool


async def load(pool: asyncpg.Pool, interaction_id: uuid.UUID) -> Loaded | None:
    """The interaction, its logs and whether it is enriched already; None when it is gone (erased)."""
    row = await pool.fetchrow(
        f"""SELECT i.project_id, i.type::text AS type, i.content_json, i.content_text, i.created_at,
                  l.console, l.network, l.errors,
                  EXISTS (SELECT 1 FROM enrichment_signatures s
                           WHERE s.project_id = i.project_id AND s.interaction_id = i.id) AS enriched
             FROM interactions i
             {LOGS}
            WHERE i.id = $1""", interaction_id)
    if row is None:
        return None
    return Loaded(row["project_id"], row["type"], row["content_json"] or {}, row["content_text"], row["created_at"],
                  _logs(row), row["enriched"])


async def lock_project(conn: asyncpg.Connection, project_id: uuid.UUID) -> None:
    """Serialise grouping within a project until the transaction ends: two similar reports enriched at once
    must see each other, not each found a group of its own."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"enrichment:{project_id}")


async def state(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID) -> str:
    """`gone`, `enriched` or `pending`; the interaction row is key-share locked, so it cannot be deleted
    (erasure, retention) before this transaction ends, while triage edits go on."""
    exists = await conn.fetchval(
        "SELECT true FROM interactions WHERE project_id = $1 AND id = $2 FOR KEY SHARE", project_id, interaction_id)
    if not exists:
        return "gone"
    done = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM enrichment_signatures WHERE project_id = $1 AND interaction_id = $2)",
        project_id, interaction_id)
    return "enriched" if done else "pending"


async def confirmed_group(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID) -> str | None:
    """The group a person put the interaction in (`duplicate_confirmed`), None when nobody did."""
    group: str | None = await conn.fetchval(
        """SELECT coalesce(ai_duplicate_group_id, id::text) FROM interactions
            WHERE project_id = $1 AND id = $2 AND duplicate_confirmed""", project_id, interaction_id)
    return group


async def _signatures(conn: asyncpg.Connection, project_id: uuid.UUID, method: str, ids: list[uuid.UUID],
                      cache: SignatureCache) -> dict[uuid.UUID, Candidate]:
    """Candidates of these interactions by id (their group left to the caller's list): signatures this worker
    read before come from its cache (a signature of one method never changes: re-signing writes another
    method's), the others are read here in one query and kept. A signature erased in between is left out."""
    wanted = [i for i in ids if (project_id, i) not in cache]
    if wanted:
        for r in await conn.fetch(
                """SELECT interaction_id, terms, log_terms, embedding, embedding_model FROM enrichment_signatures
                    WHERE project_id = $1 AND interaction_id = ANY($2::uuid[]) AND method = $3""",
                project_id, wanted, method):
            embedding = r["embedding"]
            cache.put((project_id, r["interaction_id"]), Signature.from_stored(
                dict(r["terms"]), dict(r["log_terms"]), list(embedding) if embedding is not None else None,
                r["embedding_model"] or ""))
    found = {}
    for i in ids:
        sig = cache.get((project_id, i))
        if sig is not None:
            found[i] = Candidate(str(i), "", sig)
    return found


async def recent(conn: asyncpg.Connection, project_id: uuid.UUID, method: str, limit: int, cache: SignatureCache,
                 window: Window) -> datetime | None:
    """Bring the project's window (`grouping.Window`, kept by the worker) to its most recently created
    enriched interactions, all counted for IDF; returns the creation time of the oldest of them (None when
    there are fewer than `limit`: then these are all there is). Only their ids and groups are read every time;
    the signatures of rows the window lacks (usually the few enriched since its last decision) come from the
    worker's cache or are read once (`_signatures`)."""
    rows = await conn.fetch(
        """SELECT interaction_id, group_id, created_at FROM enrichment_signatures
            WHERE project_id = $1 AND method = $2
            ORDER BY created_at DESC, interaction_id DESC LIMIT $3""", project_id, method, limit)
    oldest = rows[-1]["created_at"] if len(rows) == limit else None
    keys = [r["interaction_id"] for r in rows]
    wanted = window.missing(keys)
    found = await _signatures(conn, project_id, method, wanted, cache) if wanted else {}
    window.sync(keys, [r["group_id"] for r in rows], found, len(keys))
    return oldest


async def sharing(conn: asyncpg.Connection, project_id: uuid.UUID, method: str, keys: list[str],
                  before: datetime, limit: int, cache: SignatureCache, window: Window) -> None:
    """Add to the window, after its recent rows and not counted for IDF, the older enriched interactions
    (created at or before `before`) that share any of `keys`, newest first."""
    recent = window.keys[:window.counted]
    rows = await conn.fetch(
        """SELECT interaction_id, group_id FROM enrichment_signatures
            WHERE project_id = $1 AND method = $2 AND keys && $3::text[] AND created_at <= $4
              AND NOT (interaction_id = ANY($5::uuid[]))
            ORDER BY created_at DESC LIMIT $6""", project_id, method, keys, before, recent, limit)
    older = [r["interaction_id"] for r in rows]
    wanted = window.missing(older)
    found = await _signatures(conn, project_id, method, wanted, cache) if wanted else {}
    window.sync(recent + older, window.groups[:len(recent)] + [r["group_id"] for r in rows], found, len(recent))


async def merge_groups(conn: asyncpg.Connection, project_id: uuid.UUID, merged: list[str], into: str) -> None:
    """Rename merged groups to the surviving id, on the interactions and their signatures alike."""
    await conn.execute(
        """UPDATE interactions SET ai_duplicate_group_id = $3
            WHERE project_id = $1 AND ai_duplicate_group_id = ANY($2::text[])""", project_id, merged, into)
    await conn.execute(
        """UPDATE enrichment_signatures SET group_id = $3
            WHERE project_id = $1 AND group_id = ANY($2::text[])""", project_id, merged, into)


async def store(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID,
                created_at: datetime, method: str, sig: Signature, keys: list[str], group_id: str,
                summary: str | None, labels: list[str], confidence: float, ai_method: dict[str, str]) -> None:
    """Write the signature and fill the interaction's ai_* fields (the caller holds the row, see `state`)."""
    await conn.execute(
        """INSERT INTO enrichment_signatures (project_id, interaction_id, group_id, method, terms, log_terms, keys,
                                              embedding, embedding_model, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        project_id, interaction_id, group_id, method, sig.stored_terms(), sig.log_terms, keys, sig.embedding,
        sig.embedding_model or None, created_at)
    await conn.execute(
        """UPDATE interactions SET ai_summary = $3, ai_labels = $4, ai_duplicate_group_id = $5, ai_confidence = $6,
                                  ai_method = $7
            WHERE project_id = $1 AND id = $2""",
        project_id, interaction_id, summary, labels, group_id, confidence, ai_method)


@dataclass
class Stale:
    """An enriched interaction whose signature an earlier method wrote, with what re-signing it reads."""

    interaction_id: uuid.UUID
    type: str
    content: dict[str, Any]
    content_text: str | None
    logs: dict[str, Any] | None
    created_at: datetime
    embedding: list[float] | None
    """The signature's embedding, if it has one (of any model)."""
    embedding_model: str


async def stale(conn: asyncpg.Connection, project_id: uuid.UUID, method: str, limit: int) -> list[Stale]:
    """Up to `limit` of the project's signatures written by another method than `method`, their rows locked
    (and their interactions key-share locked, so that erasure waits for the batch)."""
    rows = await conn.fetch(
        f"""SELECT i.id, i.type::text AS type, i.content_json, i.content_text, l.console, l.network, l.errors,
                  s.created_at, s.embedding, s.embedding_model
             FROM enrichment_signatures s
             JOIN interactions i ON i.project_id = s.project_id AND i.id = s.interaction_id
             {LOGS}
            WHERE s.project_id = $1 AND s.method <> $2
            ORDER BY s.created_at DESC LIMIT $3
              FOR NO KEY UPDATE OF s FOR KEY SHARE OF i""", project_id, method, limit)
    return [Stale(r["id"], r["type"], r["content_json"] or {}, r["content_text"],
                  _logs(r), r["created_at"], list(r["embedding"]) if r["embedding"] is not None else None,
                  r["embedding_model"] or "") for r in rows]


async def resign(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID, method: str,
                 sig: Signature, keys: list[str]) -> None:
    """Replace a signature's terms with those `method` computes; its group stays, and so does its embedding
    unless `sig` brings one (for a signature that had none)."""
    await conn.execute(
        """UPDATE enrichment_signatures SET method = $3, terms = $4, log_terms = $5, keys = $6,
                  embedding = COALESCE($7, embedding), embedding_model = COALESCE($8, embedding_model)
            WHERE project_id = $1 AND interaction_id = $2""",
        project_id, interaction_id, method, sig.stored_terms(), sig.log_terms, keys, sig.embedding,
        sig.embedding_model or None)
