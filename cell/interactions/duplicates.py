"""Duplicate endpoints: what the machine suggests (`similar`), and what people decide (`duplicate-of`, dismiss).

`GET …/interactions/{id}/similar` asks the similarity index (cell/enrichment/index.py) for the project's
interactions whose sentence embedding is nearest the interaction's, of any type, best first; pairs a
person dismissed are left out. An interaction not enriched yet (or without words) has no suggestions.

`POST …/interactions/{id}/duplicate-of {interaction_id}` puts both in one group, confirmed; `DELETE
…/duplicate-of` takes the interaction out of its group again. `POST …/interactions/{id}/similar/{other_id}
/dismiss` says a suggestion is wrong: it is not suggested again, and no worker groups the pair later.
All three are idempotent (a repeat changes nothing and writes no second audit entry), need role `agent`
(keys: `write`), and are audited in the transaction that makes the change; a change also queues
`interaction.updated` for webhooks. A merge or an unmerge moves the counts of the feedback items linked to
the group with it, in the same transaction (cell/feedback/demand.py: the interactions an item reaches and
the votes of the group's reporters); the audit entry lists each item that changed (`feedback_items`).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, delete, get, post

from cell import audit
from cell.auth import READ, WRITE, Principal, require
from cell.context import caller, ctx
from cell.enrichment import index
from cell.interactions import groups, queries
from cell.interactions.types import Interaction, InteractionDetail, LogsOut
from cell.outbox import add as enqueue
from common.problems import Problem

DEFAULT_LIMIT, MAX_LIMIT = 10, 50
DETAIL_COLUMNS = [c.strip().split()[-1] for c in queries.COLUMNS.split(",")]
"""The names of `queries.COLUMNS` (what GET shows of an interaction)."""


class Similar(msgspec.Struct):
    """One suggestion: an interaction as `GET …/interactions/{id}` shows it, and how similar it is, 0–1: the
    cosine of the two sentence embeddings corrected for hubness, cos − (r(x) − r(q))/2 (`index.rank`), which
    orders the list."""

    interaction: InteractionDetail
    score: float


class SimilarList(msgspec.Struct):
    """`GET …/similar`: best first."""

    data: list[Similar]


class DuplicateOf(msgspec.Struct):
    """`POST …/duplicate-of`: the interaction this one duplicates."""

    interaction_id: uuid.UUID


class Dismissal(msgspec.Struct):
    """A suggestion a person dismissed."""

    interaction_id: uuid.UUID
    other_id: uuid.UUID
    dismissed: bool = True


@get("/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/similar")
async def similar_interactions(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID,
                               limit: int | None = None) -> SimilarList:
    """The project's interactions most similar to this one, best first (`limit`: 1 to 50, default 10)."""
    require(await caller(request, project_id), project_id, level=READ)
    size = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= size <= MAX_LIMIT:
        raise Problem(422, f"limit must be between 1 and {MAX_LIMIT}")
    context = ctx(request)
    async with context.pool.acquire() as conn:
        found = await suggest(conn, context.index, project_id, interaction_id, size)
    if found is None:
        raise Problem(404, "no such interaction")
    return SimilarList(found)


async def suggest(conn: asyncpg.Connection, which: index.Index, project_id: uuid.UUID, interaction_id: uuid.UUID,
                  size: int) -> list[Similar] | None:
    """The handler's database work (also what bench/similar.py times): the `size` best suggestions, each
    the interaction as GET shows it with its logs; None when the project has no such interaction.

    With pgvector, one statement does it all (`index.ranked_sql` joined to the rows and their first logs)
    in a transaction that sets the HNSW search; whether the interaction exists is asked only when nothing
    came back. Without pgvector (or for another model's vectors), the vector is read and ranked in numpy
    (`index.similar`), then the rows are read."""
    if which.hnsw:
        exact_scan = await index.small(conn, project_id)
        async with conn.transaction():
            await conn.execute(index.settings(exact_scan))
            rows = await conn.fetch(
                f"""WITH ranked AS ({index.ranked_sql(exact_scan)})
                    SELECT r.score, {queries.COLUMNS}, l.console AS log_console, l.network AS log_network,
                           l.errors AS log_errors, l.found AS has_logs
                      FROM ranked r JOIN interactions ON project_id = $1 AND id = r.interaction_id
                      LEFT JOIN LATERAL (
                          SELECT console, network, errors, true AS found FROM interaction_logs
                           WHERE interaction_logs.project_id = $1 AND interaction_id = r.interaction_id
                           ORDER BY interaction_logs.created_at LIMIT 1) l ON true
                     ORDER BY r.score DESC, r.cosine DESC""",
                project_id, interaction_id, size)
        if rows:
            return [_suggestion(row, row["score"], row if row["has_logs"] else None, "log_") for row in rows]
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM interactions WHERE project_id = $1 AND id = $2)",
                               project_id, interaction_id):
        return None
    found = await index.vector_of(conn, which, project_id, interaction_id)
    if found is None or (which.hnsw and len(found[1]) == index.DIMENSIONS):
        return []  # not enriched (or no words); or in the HNSW column, where the statement above found none
    model, vector = found
    exclude = await groups.dismissed_with(conn, project_id, interaction_id)
    near = await index.similar(conn, which, project_id, interaction_id, model, vector, exclude, size)
    ids = [n.interaction_id for n in near]
    rows = await conn.fetch(f"SELECT {queries.COLUMNS} FROM interactions WHERE project_id = $1 AND id = ANY($2)",
                            project_id, ids)
    logs = await conn.fetch(
        """SELECT DISTINCT ON (interaction_id) interaction_id, console, network, errors FROM interaction_logs
            WHERE project_id = $1 AND interaction_id = ANY($2) ORDER BY interaction_id, created_at""",
        project_id, ids)
    by_id = {r["id"]: r for r in rows}
    logs_of = {r["interaction_id"]: r for r in logs}
    return [_suggestion(by_id[n.interaction_id], n.score or 0.0, logs_of.get(n.interaction_id), "")
            for n in near if n.interaction_id in by_id]  # one erased meanwhile is left out


def _suggestion(row: asyncpg.Record, score: float, logs: asyncpg.Record | None, prefix: str) -> Similar:
    """One suggestion from an interaction's row (and its first logs row, its columns named `prefix`…)."""
    detail = msgspec.convert({k: row[k] for k in DETAIL_COLUMNS}, InteractionDetail)
    if logs is not None:
        detail.logs = msgspec.convert({k: logs[prefix + k] for k in ("console", "network", "errors")}, LogsOut)
    return Similar(detail, round(min(1.0, max(0.0, score)), 4))


async def _updated(conn: Any, principal: Principal, project_id: uuid.UUID, interaction_id: uuid.UUID,
                   action: str, meta: dict[str, Any]) -> None:
    await audit.record(conn, principal, action, "interaction", interaction_id, meta)
    await enqueue(conn, project_id, "interaction.updated",
                  {"interaction_id": str(interaction_id), "fields": ["ai_duplicate_group_id", "duplicate_confirmed"]})


@post("/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/duplicate-of", status_code=200)
async def mark_duplicate(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID,
                         data: DuplicateOf) -> Interaction:
    """Confirm that this interaction duplicates `interaction_id`: both end in one group."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        change = await groups.merge(conn, project_id, interaction_id, data.interaction_id)
        if change.changed:
            await _updated(conn, principal, project_id, interaction_id, "interaction.duplicate_merged",
                           {"duplicate_of": str(data.interaction_id), "group_id": change.group_id,
                            "groups_before": list(change.before),
                            "feedback_items": [m.as_json() for m in change.moved]})
        row = await queries.get(conn, project_id, interaction_id)
    assert row is not None
    return msgspec.convert(dict(row), Interaction)


@delete("/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/duplicate-of", status_code=200)
async def unmark_duplicate(request: Request[Any, Any, Any], project_id: uuid.UUID,
                           interaction_id: uuid.UUID) -> Interaction:
    """Take this interaction out of its duplicate group (a group of its own again)."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        change = await groups.unmerge(conn, project_id, interaction_id)
        if change.changed:
            await _updated(conn, principal, project_id, interaction_id, "interaction.duplicate_unmerged",
                           {"group_before": change.before[0] if change.before else None,
                            "feedback_items": [m.as_json() for m in change.moved]})
        row = await queries.get(conn, project_id, interaction_id)
    assert row is not None
    return msgspec.convert(dict(row), Interaction)


@post("/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/similar/{other_id:uuid}/dismiss",
      status_code=201)
async def dismiss_suggestion(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID,
                             other_id: uuid.UUID) -> Response[Dismissal]:
    """Say that `other_id` is not a duplicate of this interaction: 201, or 200 when already said."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        created = await groups.dismiss(conn, project_id, interaction_id, other_id)
        if created:
            await audit.record(conn, principal, "interaction.suggestion_dismissed", "interaction", interaction_id,
                               {"other_id": str(other_id)})
    return Response(Dismissal(interaction_id, other_id), status_code=201 if created else 200)


ROUTES = [similar_interactions, mark_duplicate, unmark_duplicate, dismiss_suggestion]
