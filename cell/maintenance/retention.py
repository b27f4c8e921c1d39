"""Retention: a project's data older than `projects.settings.retention_days` is deleted, bytes included.

Absent (or not a positive whole number of days), everything is kept. What goes,
in this order, each in batches of `batch` rows:

- interactions created before the cutoff, with the replays attached to them and
  the object bytes of both (media, replay chunks); their logs and media rows go
  by cascade; the links, survey responses and session counts that counted them
  are decremented in the same transaction, so counters stay exact (feedback
  items that reached them through confirmed duplicate groups are recounted,
  with their group votes: cell/feedback/demand.py);
- replays created before the cutoff, with their chunks;
- conversations with no message since the cutoff (messages by cascade);
- sessions not seen since the cutoff (their replays with them);
- the project's dead letters that failed before the cutoff;
- when any of the above went, the project's exports (built or being built), whose archives may hold it: they
  show `failed` with the reason `EXPIRED` (cell/exports/queries.py), their objects deleted like the others,
  so no copy outlives the limit.

Each batch is one transaction that also writes an `objects.delete` outbox row
naming the batch's objects, so the bytes go even if the process dies right
after the commit (erasure works the same way). A crash mid-run therefore loses nothing: committed batches are complete,
and the next run carries on from what is left.

A run is recorded in `maintenance_runs`, its counts updated with each batch in
that batch's transaction; when it ends, one audit entry `retention.purged` holds
its counts. A run that died is closed, and audited with `interrupted: true` and
the counts it had committed, by the next run for the project (runs of a project
take turns on an advisory lock, so an unfinished run found under the lock is a
dead one).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from obstore.exceptions import BaseError as ObjectStoreError

from cell import audit
from cell.enrichment.queries import lock_project
from cell.exports import queries as exports
from cell.interactions import groups
from cell.maintenance.counters import system_principal
from cell.storage import ObjectStore
from cell.users import Footprint
from cell.users.erasure import OBJECTS_DELETE, delete_objects, object_keys
from cell.users.erasure import _delete_counted as delete_counted
from common.ids import uuid7

log = logging.getLogger("relay.maintenance")

TASK = "retention"
MAX_DAYS = 36500
BATCH = 500


def retention_days(value: Any) -> int | None:
    """The retention period a project's settings give, or None (keep forever) for anything else than a
    whole number of days from 1 to 36500."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        return None
    days = int(value)
    return days if 1 <= days <= MAX_DAYS else None


@dataclass(frozen=True)
class Batch:
    """What one batch deleted (counts) and the objects whose bytes go with it."""

    counts: dict[str, int]
    keys: list[str]


Step = Callable[[asyncpg.Connection, ObjectStore, uuid.UUID, datetime, int], Awaitable[Batch | None]]
NIL = uuid.UUID(int=0)


async def _keys(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID,
                interaction_ids: list[uuid.UUID], replay_ids: list[uuid.UUID]) -> list[str]:
    """The objects of these interactions (media) and replays (chunks), found the way erasure finds a
    person's: the same query serves both."""
    found = Footprint(user_id=NIL, session_ids=[], interaction_ids=interaction_ids, conversation_ids=[],
                      replay_ids=replay_ids)
    return await object_keys(conn, store, project_id, found)


async def _ids(conn: asyncpg.Connection, query: str, *args: Any) -> list[uuid.UUID]:
    return [r[0] for r in await conn.fetch(query, *args)]


async def _interactions(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID, cutoff: datetime,
                        limit: int) -> Batch | None:
    # The grouping lock before any row lock (as merges take them): the feedback items reaching these
    # interactions, through links or confirmed duplicate groups, are recounted once they are gone.
    await lock_project(conn, project_id)
    ids = await _ids(conn, """SELECT id FROM interactions WHERE project_id = $1 AND created_at < $2
                               ORDER BY created_at, id LIMIT $3 FOR UPDATE""", project_id, cutoff, limit)
    if not ids:
        return None
    replays = await _ids(conn, "SELECT id FROM replays WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])"
                               " ORDER BY id FOR UPDATE", project_id, ids)
    keys = await _keys(conn, store, project_id, ids, replays)
    gone = await groups.leaving(conn, project_id, ids)
    media: int = await conn.fetchval(
        "SELECT count(*) FROM media WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])", project_id, ids)
    counts = {"interactions": len(ids), "media": media, "replays": len(replays)}
    # Rows that count toward a surviving row's counter go first, each with its decrement.
    counts["feedback_links"] = await delete_counted(
        conn, project_id, "DELETE FROM feedback_links WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])"
        " RETURNING feedback_item_id", [ids], "feedback_items", "linked_interaction_count")
    counts["survey_responses"] = await delete_counted(
        conn, project_id, "DELETE FROM survey_responses WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])"
        " RETURNING survey_id", [ids], "surveys", "response_count")
    await conn.execute("DELETE FROM replays WHERE project_id = $1 AND id = ANY($2::uuid[])", project_id, replays)
    await conn.execute("DELETE FROM integration_links WHERE project_id = $1 AND internal_id = ANY($2::uuid[])",
                       project_id, ids)
    await delete_counted(conn, project_id, "DELETE FROM interactions WHERE project_id = $1 AND id = ANY($2::uuid[])"
                         " RETURNING session_id", [ids], "sessions", "interaction_count")
    await groups.left(conn, project_id, gone)
    return Batch(counts, keys)


async def _replays(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID, cutoff: datetime,
                   limit: int) -> Batch | None:
    ids = await _ids(conn, """SELECT id FROM replays WHERE project_id = $1 AND created_at < $2
                               ORDER BY created_at, id LIMIT $3 FOR UPDATE""", project_id, cutoff, limit)
    if not ids:
        return None
    keys = await _keys(conn, store, project_id, [], ids)
    await conn.execute("DELETE FROM replays WHERE project_id = $1 AND id = ANY($2::uuid[])", project_id, ids)
    return Batch({"replays": len(ids)}, keys)


async def _conversations(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID, cutoff: datetime,
                         limit: int) -> Batch | None:
    ids = await _ids(conn, """SELECT id FROM conversations
                               WHERE project_id = $1 AND coalesce(last_message_at, created_at) < $2
                               ORDER BY coalesce(last_message_at, created_at), id LIMIT $3 FOR UPDATE""",
                     project_id, cutoff, limit)
    if not ids:
        return None
    messages: int = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE project_id = $1 AND conversation_id = ANY($2::uuid[])", project_id, ids)
    await conn.execute("DELETE FROM integration_links WHERE project_id = $1 AND internal_id = ANY($2::uuid[])",
                       project_id, ids)
    await conn.execute("DELETE FROM conversations WHERE project_id = $1 AND id = ANY($2::uuid[])", project_id, ids)
    return Batch({"conversations": len(ids), "messages": messages}, [])


async def _sessions(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID, cutoff: datetime,
                    limit: int) -> Batch | None:
    ids = await _ids(conn, """SELECT id FROM sessions WHERE project_id = $1 AND last_seen_at < $2
                               ORDER BY last_seen_at, id LIMIT $3 FOR UPDATE""", project_id, cutoff, limit)
    if not ids:
        return None
    replays = await _ids(conn, "SELECT id FROM replays WHERE project_id = $1 AND session_id = ANY($2::uuid[])"
                               " ORDER BY id FOR UPDATE", project_id, ids)
    keys = await _keys(conn, store, project_id, [], replays)
    await conn.execute("DELETE FROM replays WHERE project_id = $1 AND id = ANY($2::uuid[])", project_id, replays)
    await conn.execute("DELETE FROM sessions WHERE project_id = $1 AND id = ANY($2::uuid[])", project_id, ids)
    return Batch({"sessions": len(ids), "replays": len(replays)}, keys)


async def _dead_letters(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID, cutoff: datetime,
                        limit: int) -> Batch | None:
    gone = await conn.fetch(
        """DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE project_id = $1 AND failed_at < $2
                                                 ORDER BY failed_at, id LIMIT $3) RETURNING id""",
        project_id, cutoff, limit)
    return Batch({"dead_letters": len(gone)}, []) if gone else None


STEPS: tuple[Step, ...] = (_interactions, _replays, _conversations, _sessions, _dead_letters)


async def _delete_now(conn: asyncpg.Connection, store: ObjectStore, outbox_id: int, keys: list[str]) -> None:
    """After a batch's commit: delete its objects and mark their `objects.delete` row done; on a store error
    the row stays pending and the worker's `objects.delete` job deletes them. (Erasure's `finish` does the
    same on a pool; this uses the run's own connection, so a run never waits for a second one.)"""
    try:
        await delete_objects(store, keys)
    except (OSError, ObjectStoreError) as exc:
        log.warning("retention: object deletion left to the worker (outbox %d): %s", outbox_id, type(exc).__name__)
        return
    await conn.execute("UPDATE outbox SET dispatched_at = now() WHERE id = $1 AND dispatched_at IS NULL", outbox_id)


def _add(totals: dict[str, Any], counts: dict[str, int]) -> None:
    for name, n in counts.items():
        totals[name] = totals.get(name, 0) + n


async def _close_interrupted(conn: asyncpg.Connection, project_id: uuid.UUID) -> int:
    """Audit and close the runs that died before their end (their counts are what they committed)."""
    closed = 0
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT id, counts FROM maintenance_runs WHERE project_id = $1 AND task = $2 AND finished_at IS NULL
                ORDER BY started_at FOR UPDATE""", project_id, TASK)
        for row in rows:
            await audit.record(conn, system_principal(project_id, TASK), "retention.purged", "project", project_id,
                               {"run_id": str(row["id"]), **row["counts"], "interrupted": True})
            await conn.execute("UPDATE maintenance_runs SET finished_at = now() WHERE id = $1", row["id"])
            closed += 1
    if closed:
        log.warning("retention: closed %d interrupted run(s) of project %s", closed, project_id)
    return closed


async def _run(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID,
               batch: int) -> dict[str, Any] | None:
    await _close_interrupted(conn, project_id)
    days = retention_days(await conn.fetchval("SELECT settings->'retention_days' FROM projects WHERE id = $1",
                                              project_id))
    if days is None:
        return None
    cutoff: datetime = await conn.fetchval("SELECT now() - make_interval(days => $1)", days)
    run_id = uuid7()
    totals: dict[str, Any] = {"retention_days": days, "cutoff": cutoff.isoformat(), "objects": 0}
    await conn.execute("INSERT INTO maintenance_runs (id, project_id, task, counts) VALUES ($1, $2, $3, $4)",
                       run_id, project_id, TASK, totals)
    for step in STEPS:
        while True:
            outbox_id: int | None = None
            async with conn.transaction():
                got = await step(conn, store, project_id, cutoff, batch)
                if got is not None:
                    if got.keys:
                        outbox_id = await conn.fetchval(
                            "INSERT INTO outbox (project_id, kind, payload) VALUES ($1, $2, $3) RETURNING id",
                            project_id, OBJECTS_DELETE, {"keys": got.keys})
                    _add(totals, {**got.counts, "objects": len(got.keys)})
                    await conn.execute("UPDATE maintenance_runs SET counts = $2 WHERE id = $1", run_id, totals)
            if got is None:
                break
            if outbox_id is not None:
                await _delete_now(conn, store, outbox_id, got.keys)
    if any(n for name, n in totals.items() if name not in ("retention_days", "cutoff")):
        await _withdraw_exports(conn, store, project_id, run_id, totals)
    async with conn.transaction():
        await audit.record(conn, system_principal(project_id, TASK), "retention.purged", "project", project_id,
                           {"run_id": str(run_id), **totals})
        await conn.execute("UPDATE maintenance_runs SET finished_at = now() WHERE id = $1", run_id)
    log.info("retention: project %s, %s", project_id, totals)
    return totals


async def _withdraw_exports(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID, run_id: uuid.UUID,
                            totals: dict[str, Any]) -> None:
    """The run deleted data: the project's exports may hold it, so they are withdrawn and their objects go (in
    one transaction with an `objects.delete` row, as a batch's do)."""
    outbox_id: int | None = None
    async with conn.transaction():
        withdrawn, keys = await exports.withdraw_with_objects(conn, store, project_id, exports.EXPIRED)
        if not withdrawn:
            return
        if keys:
            outbox_id = await conn.fetchval(
                "INSERT INTO outbox (project_id, kind, payload) VALUES ($1, $2, $3) RETURNING id",
                project_id, OBJECTS_DELETE, {"keys": keys})
        _add(totals, {"exports_withdrawn": len(withdrawn), "objects": len(keys)})
        await conn.execute("UPDATE maintenance_runs SET counts = $2 WHERE id = $1", run_id, totals)
    if outbox_id is not None:
        await _delete_now(conn, store, outbox_id, keys)


async def purge(pool: asyncpg.Pool, store: ObjectStore, project_id: uuid.UUID, *,
                batch: int = BATCH) -> dict[str, Any] | None:
    """One retention run for one project: what it deleted, or None when the project keeps its data forever."""
    lock = f"maintenance.{TASK}:{project_id}"
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock)
        try:
            return await _run(conn, store, project_id, batch)
        finally:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock)
