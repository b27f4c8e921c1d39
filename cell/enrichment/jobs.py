"""Worker jobs of the enrichment area: every new interaction gets its summary, labels and duplicate group.

The provider (local, or the cell's configured endpoint) is asked outside any transaction, since it may
take seconds. Grouping then runs in one transaction under a per-project advisory lock: it reads the
signatures of the project's earlier interactions (ids and groups every time, a signature once per worker:
`SIGNATURES`) into the project's window the worker keeps (`WINDOWS`), decides, renames merged groups and
writes this interaction's signature and ai_* fields together. A redelivered job finds the signature and
does nothing; a job for an interaction erased meanwhile finds nothing to do.

Signatures are compared only with signatures of the same method (`grouping.METHOD`). When the method
changes, the signatures an earlier one wrote are re-signed by `enrichment.resign` — scheduled hourly for
every project that has any, or `relay jobs run resign --project P` — so that new reports keep finding
their duplicates among the old ones. Re-signing recomputes terms from the stored interaction and keeps
its group: what users already see does not move; a signature without an embedding gets the worker's own
(`embedding`), so old reports are compared with new ones by words and embedding alike.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import httpx

from cell.enrichment import embedding, grouping, index, providers, queries
from cell.enrichment.text import document
from cell.interactions import groups
from cell.jobs import Cron, Job
from cell.maintenance.jobs import project_of, schedule
from cell.settings import CellSettings

log = logging.getLogger("relay.enrichment")

RECENT = 1000
"""How many of the project's latest interactions every new one is compared with (and IDF is taken from)."""
OLDER = 500
"""How many older interactions sharing one of its rarest terms it is compared with besides."""
SIGNATURES = grouping.SignatureCache()
"""The candidates' signatures this worker process has read (`queries.recent` reads only ids and groups of
those it holds)."""
WINDOWS = grouping.Windows()
"""Each project's candidates as this worker's last decision for it left them (`grouping.Window`): the next
decision applies the difference (one row in, one out, groups renamed by merges) instead of rebuilding a
thousand rows' arrays. Bounded: the least recently used project's window is dropped."""


async def enrich(pool: asyncpg.Pool, settings: CellSettings, http: httpx.AsyncClient,
                 interaction_id: uuid.UUID, similarity: index.Index | None = None) -> str:
    """Enrich one interaction (idempotent); returns what happened: `enriched`, `already` or `gone`.

    Its group is decided among the project's earlier interactions, joined only above the calibrated cut
    (`grouping.decide`), and never across a pair a person dismissed (`groups.conflicts`): then it stays a
    group of its own. One a person already merged (`duplicate-of` before the workers reached it) keeps the
    group the person chose. Its embedding goes to the similarity index (`index.store`) in the same transaction.
    """
    similarity = similarity or await index.detect(pool)
    loaded = await queries.load(pool, interaction_id)
    if loaded is None:
        return "gone"
    if loaded.enriched:
        return "already"
    doc = document(loaded.type, loaded.content, loaded.content_text, loaded.logs)
    analysis = await providers.for_settings(settings, http).analyse(doc)
    sig = grouping.signature(doc)
    sig.embedding, sig.embedding_model = analysis.embedding, analysis.embedding_model
    limits = grouping.Thresholds(embedding=settings.ai_embedding_threshold)
    pid = loaded.project_id
    async with pool.acquire() as conn, conn.transaction():
        await queries.lock_project(conn, pid)
        state = await queries.state(conn, pid, interaction_id)
        if state != "pending":
            return "already" if state == "enriched" else "gone"
        if (held := await queries.confirmed_group(conn, pid, interaction_id)) is not None:
            # A person merged it before the workers reached it: their decision stands.
            decision = grouping.Decision(group_id=held, matched=held, similarity=1.0)
        else:
            decision = await _decide(conn, pid, interaction_id, sig, limits)
        if decision.merged:
            await queries.merge_groups(conn, pid, decision.merged, decision.group_id)
        await queries.store(conn, pid, interaction_id, loaded.created_at, grouping.METHOD, sig, grouping.keys(sig),
                            decision.group_id, analysis.summary, analysis.labels, decision.confidence,
                            {**analysis.method, "grouping": grouping.METHOD})
        if sig.embedding:
            await index.store(conn, similarity, pid, interaction_id, sig.embedding_model, sig.embedding,
                              loaded.created_at)
    return "enriched"


async def _decide(conn: asyncpg.Connection, pid: uuid.UUID, interaction_id: uuid.UUID, sig: grouping.Signature,
                  limits: grouping.Thresholds) -> grouping.Decision:
    """The workers' own decision for a new interaction, among the project's earlier ones (under its lock, so
    the project's window is used by one decision at a time; other projects' decisions interleave with it
    at every await, each with its own window)."""
    key = (pid, grouping.METHOD)
    window = WINDOWS.get(key)
    try:
        oldest = await queries.recent(conn, pid, grouping.METHOD, RECENT, SIGNATURES, window)
        if oldest is not None:  # a long history: also the older ones that share a rare term
            await queries.sharing(conn, pid, grouping.METHOD, window.top(sig), oldest, OLDER, SIGNATURES, window)
        decision = window.decide(str(interaction_id), sig, limits)
    except BaseException:  # a query failed or the job was cancelled between two syncs: start afresh next time
        WINDOWS.drop(key)
        raise
    if decision.matched and await groups.conflicts(conn, pid, interaction_id, [decision.group_id, *decision.merged]):
        decision = grouping.Decision(group_id=str(interaction_id), similarity=decision.similarity)
    return decision


async def enrich_interaction(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """`interaction.created`: enrich the new interaction."""
    await enrich(ctx["pool"], ctx["settings"], ctx["http"], uuid.UUID(payload["interaction_id"]), await _index(ctx))


async def _index(ctx: dict[str, Any]) -> index.Index:
    """The similarity index this worker's database offers, read from it once (at the first job)."""
    found: index.Index | None = ctx.get("similarity_index")
    if found is None:
        found = ctx["similarity_index"] = await index.detect(ctx["pool"])
    return found


RESIGN = "enrichment.resign"
RESIGN_BATCH = 50
"""Signatures re-signed per transaction: embedding them takes ~20 ms each while the project's grouping lock is
held, so a batch keeps new reports of that project waiting about a second at most."""


async def resign(pool: asyncpg.Pool, project_id: uuid.UUID, *, batch: int = RESIGN_BATCH,
                 similarity: index.Index | None = None) -> int:
    """Re-sign the project's signatures written by an earlier method, a batch per transaction under the
    project's grouping lock (resumable: a repeat carries on with what is left); returns how many. Each
    embedding (the one it had, or the one computed now) is put in the similarity index, so interactions
    enriched before the index existed are suggested too."""
    similarity = similarity or await index.detect(pool)
    done = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await queries.lock_project(conn, project_id)
            rows = await queries.stale(conn, project_id, grouping.METHOD, batch)
            docs = [document(row.type, row.content, row.content_text, row.logs) for row in rows]
            # One batched forward pass for the batch's signatures that have no embedding (of any model).
            wanted = [i for i, (row, doc) in enumerate(zip(rows, docs, strict=True))
                      if row.embedding is None and doc.words]
            vectors = await asyncio.to_thread(embedding.embed, [docs[i].words for i in wanted]) if wanted else None
            fresh = dict(zip(wanted, vectors, strict=True)) if vectors else {}
            for i, (row, doc) in enumerate(zip(rows, docs, strict=True)):
                sig = grouping.signature(doc)
                if i in fresh:
                    sig.embedding, sig.embedding_model = fresh[i], embedding.MODEL
                await queries.resign(conn, project_id, row.interaction_id, grouping.METHOD, sig, grouping.keys(sig))
                vector, model = (sig.embedding, sig.embedding_model) if sig.embedding else (row.embedding,
                                                                                            row.embedding_model)
                if vector:
                    await index.store(conn, similarity, project_id, row.interaction_id, model, vector, row.created_at)
        done += len(rows)
        if len(rows) < batch:
            return done


async def resign_job(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """`enrichment.resign` `{project_id}`: bring the project's signatures to the current method."""
    count = await resign(ctx["pool"], project_of(payload))
    if count:
        log.info("re-signed %d interactions for method %s", count, grouping.METHOD)


async def schedule_resign(ctx: dict[str, Any]) -> int:
    """Hourly: a re-signing job for every project holding signatures of an earlier method."""
    return await schedule(ctx["pool"], RESIGN, f"""EXISTS (SELECT 1 FROM enrichment_signatures s
                                                   WHERE s.project_id = p.id AND s.method <> '{grouping.METHOD}')""")


JOBS = [Job("interaction.created", enrich_interaction, timeout=120, retries=5, name="enrichment.interaction"),
        Job(RESIGN, resign_job, timeout=3600, retries=3, name=RESIGN)]
CRONS = [Cron("enrichment.schedule_resign", schedule_resign, cron="29 * * * *", timeout=120)]
