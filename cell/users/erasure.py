"""Erasing an end user: every row about the person and every object holding their bytes.

One transaction locks the person's rows, collects the object keys they point at (and withdraws the
project's exports, whose archives may hold the person: they go with the person's objects),
deletes the rows (keeping the counters of what survives exact: feedback items that
reached their interactions through links or confirmed duplicate groups are recounted,
cell/feedback/demand.py), records an audit
entry with counts only, and writes an `objects.delete` outbox row with the keys.
After the commit the API deletes the objects at once and marks that row
dispatched; if it cannot (a crash, the store down), the row stays pending and a
worker runs `delete_objects_job` for it, so the bytes go either way.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import asyncpg
from obstore.exceptions import BaseError as ObjectStoreError

from cell import audit
from cell.auth import Principal
from cell.enrichment.queries import lock_project
from cell.exports import queries as exports
from cell.interactions import groups
from cell.storage import ObjectStore, project_key
from cell.users import Footprint, footprint

log = logging.getLogger("relay.erasure")

OBJECTS_DELETE = "objects.delete"


async def object_keys(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID,
                      found: Footprint) -> list[str]:
    """Every object of the person's: their interactions' media, and their replays' chunks (the keys the
    replay index names, and whatever lies under each replay's own prefix)."""
    keys: set[str] = set()
    rows = await conn.fetch(
        """SELECT storage_key FROM media WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])
              AND storage_key IS NOT NULL""", project_id, found.interaction_ids)
    keys.update(r[0] for r in rows)
    own = project_key(project_id) + "/"
    for row in await conn.fetch("SELECT id, chunks FROM replays WHERE project_id = $1 AND id = ANY($2::uuid[])",
                                project_id, found.replay_ids):
        keys.update(await replay_keys(store, project_id, row["id"], row["chunks"]))
    return sorted(k for k in keys if k.startswith(own))


async def replay_keys(store: ObjectStore, project_id: uuid.UUID, replay_id: uuid.UUID, chunks: Any) -> list[str]:
    """A replay's objects: the keys its chunk index names (in the project's prefix), and whatever lies
    under the replay's own prefix; sorted."""
    own = project_key(project_id) + "/"
    keys = {k for k in _strings(chunks) if k.startswith(own)}
    keys.update(k for k, _ in await store.keys(project_key(project_id, "replays", str(replay_id))))
    return sorted(keys)


def _strings(value: Any) -> Iterable[str]:
    """Every string inside a JSON value (the replay chunk index names its objects somewhere in it)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


async def _delete_counted(conn: asyncpg.Connection, project_id: uuid.UUID, delete_sql: str, args: list[Any],
                          parent: str, counter: str) -> int:
    """Run a DELETE … RETURNING <parent id> and take the deleted rows off their parents' counter.

    Only rows this statement actually deleted are subtracted, in the same transaction, so the counter
    stays exact whatever ran concurrently.
    """
    rows = await conn.fetch(delete_sql, project_id, *args)
    per_parent = Counter(r[0] for r in rows if r[0] is not None)
    if per_parent:
        ids = sorted(per_parent)
        await conn.execute(
            f"""UPDATE {parent} p SET {counter} = p.{counter} - d.n
                  FROM unnest($2::uuid[], $3::int[]) AS d(id, n)
                 WHERE p.project_id = $1 AND p.id = d.id""",
            project_id, ids, [per_parent[i] for i in ids])
    return len(rows)


async def erase(conn: asyncpg.Connection, store: ObjectStore, principal: Principal, project_id: uuid.UUID,
                user_id: uuid.UUID) -> tuple[int, list[str]] | None:
    """Delete the person's rows inside the caller's transaction; None when there is no such end user.

    Returns the id of the `objects.delete` outbox row and the object keys to delete once committed.
    """
    await lock_project(conn, project_id)  # before any row lock: merges take it first, then interactions
    found = await footprint(conn, project_id, user_id, lock=True)
    if found is None:
        return None
    keys = await object_keys(conn, store, project_id, found)
    # The project's exports may hold the person too: withdrawn, their archives go with the person's objects.
    withdrawn, export_keys = await exports.withdraw_with_objects(conn, store, project_id)
    keys += export_keys
    gone = await groups.leaving(conn, project_id, found.interaction_ids)
    sessions, interactions = found.session_ids, found.interaction_ids
    counts = {
        "sessions": len(sessions), "interactions": len(interactions),
        "conversations": len(found.conversation_ids), "replays": len(found.replay_ids), "objects": len(keys),
        "exports_withdrawn": len(withdrawn),
    }
    # Rows that count toward someone else's counter go first, each with its decrement.
    counts["feedback_votes"] = await _delete_counted(
        conn, project_id,
        """DELETE FROM feedback_votes WHERE project_id = $1 AND (user_id = $2 OR session_id = ANY($3::uuid[]))
           RETURNING feedback_item_id""", [user_id, sessions], "feedback_items", "vote_count")
    counts["feedback_links"] = await _delete_counted(
        conn, project_id,
        "DELETE FROM feedback_links WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])"
        " RETURNING feedback_item_id", [interactions], "feedback_items", "linked_interaction_count")
    counts["survey_responses"] = await _delete_counted(
        conn, project_id,
        "DELETE FROM survey_responses WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])"
        " RETURNING survey_id", [interactions], "surveys", "response_count")
    await conn.execute("DELETE FROM replays WHERE project_id = $1 AND id = ANY($2::uuid[])",
                       project_id, found.replay_ids)
    counts["messages"] = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE project_id = $1 AND conversation_id = ANY($2::uuid[])",
        project_id, found.conversation_ids)
    await conn.execute("DELETE FROM conversations WHERE project_id = $1 AND id = ANY($2::uuid[])",
                       project_id, found.conversation_ids)
    # Their interactions may sit in someone else's session; that session's count drops with them.
    # Logs and media rows go by cascade.
    await _delete_counted(
        conn, project_id,
        """DELETE FROM interactions WHERE project_id = $1 AND id = ANY($2::uuid[])
           RETURNING CASE WHEN session_id = ANY($3::uuid[]) THEN NULL ELSE session_id END""",
        [interactions, sessions], "sessions", "interaction_count")
    counts["feedback_items_recounted"] = len(await groups.left(conn, project_id, gone))
    await conn.execute(
        "DELETE FROM integration_links WHERE project_id = $1 AND internal_id = ANY($2::uuid[])",
        project_id, [*interactions, *found.conversation_ids])
    await conn.execute("DELETE FROM sessions WHERE project_id = $1 AND id = ANY($2::uuid[])", project_id, sessions)
    await conn.execute("DELETE FROM end_users WHERE project_id = $1 AND id = $2", project_id, user_id)
    await audit.record(conn, principal, "end_user.erased", "end_user", user_id, counts)
    outbox_id: int = await conn.fetchval(
        "INSERT INTO outbox (project_id, kind, payload) VALUES ($1, $2, $3) RETURNING id",
        project_id, OBJECTS_DELETE, {"keys": keys})
    return outbox_id, keys


async def delete_objects(store: ObjectStore, keys: Iterable[str]) -> int:
    """Delete objects by key (absent ones are fine, so a repeat is harmless); only `projects/…` keys,
    so a malformed payload can never reach outside the projects' data."""
    done = 0
    for key in keys:
        if isinstance(key, str) and key.startswith("projects/"):
            await store.delete(key)
            done += 1
    return done


async def finish(pool: asyncpg.Pool, store: ObjectStore, outbox_id: int, keys: list[str]) -> bool:
    """After the commit: delete the objects now and mark the outbox row done. On a store error the row
    stays pending for the worker, and False says so."""
    try:
        await delete_objects(store, keys)
    except (OSError, ObjectStoreError) as exc:
        log.warning("object deletion deferred to the worker (outbox %d): %s", outbox_id, type(exc).__name__)
        return False
    await pool.execute("UPDATE outbox SET dispatched_at = now() WHERE id = $1 AND dispatched_at IS NULL",
                       outbox_id)
    return True


async def delete_objects_job(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Worker handler of a pending `objects.delete` outbox row: the erasure's commit happened but its
    objects were not confirmed deleted. Idempotent, so at-least-once delivery is fine."""
    store: ObjectStore | None = ctx.get("store")
    if store is None:
        store = ObjectStore(ctx["settings"].object_store)
        ctx["store"] = store
    keys = payload.get("keys", [])
    if not isinstance(keys, list):
        raise ValueError("objects.delete payload needs a list of keys")
    await delete_objects(store, keys)
