"""Changes that must land in the control DB and in a cell, healed by the router's outbox.

Each change writes its directory rows and an outbox row in one control-DB
transaction, then calls the cell; when the call succeeds the outbox row is
marked done. If the router dies or the cell is unreachable in between, the
relay loop here retries the outbox row until the cell acknowledges, so a
project is never left half provisioned and a key never half created.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg

from common.problems import Problem
from common.signing import Actor
from router.directory import KEY_COLUMNS, Change, KeyEntry, ProjectEntry, publish
from router.state import RouterState

log = logging.getLogger("relay.router.outbox")
ROUTER = Actor(kind="router")


async def add(conn: asyncpg.Connection, project_id: uuid.UUID, kind: str, payload: dict[str, Any]) -> int:
    """Record a pending cross-plane step in the caller's transaction."""
    outbox_id: int = await conn.fetchval(
        "INSERT INTO outbox (project_id, kind, payload) VALUES ($1, $2, $3) RETURNING id",
        project_id, kind, payload,
    )
    return outbox_id


async def done(st: RouterState, outbox_id: int) -> None:
    """Mark a step acknowledged by the cell."""
    await st.pool.execute("UPDATE outbox SET dispatched_at = now() WHERE id = $1", outbox_id)


async def provision_project(st: RouterState, project_id: uuid.UUID, name: str, region: str,
                            created_at: Any) -> None:
    """Create the project in its cell (idempotent) and mark it active in the directory."""
    response = await st.cells[region].call(
        "PUT", f"/internal/projects/{project_id}", ROUTER,
        json={"name": name, "region": region, "created_at": created_at.isoformat()},
    )
    if response.status_code != 200:
        raise Problem(503, f"region {region} refused provisioning ({response.status_code})", retry_after=5)
    row = await st.pool.fetchrow(
        """UPDATE project_directory SET state = 'active', updated_at = now()
            WHERE id = $1 AND state = 'provisioning' RETURNING id, name, region, state::text, epoch""",
        project_id,
    )
    if row is not None:
        await publish(st.redis, st.directory, Change(project=ProjectEntry(**dict(row))))


async def discard_key(st: RouterState, project_id: uuid.UUID, region: str, key_id: uuid.UUID,
                      prefix: str) -> None:
    """Undo a key creation whose secret never reached its caller: remove it from cell and directory."""
    response = await st.cells[region].call(
        "DELETE", f"/internal/projects/{project_id}/api-keys/{key_id}", ROUTER, params={"discard": "true"})
    if response.status_code not in (200, 404, 421):
        raise Problem(503, f"region {region} refused to discard a key ({response.status_code})", retry_after=5)
    deleted = await st.pool.fetchrow(
        f"DELETE FROM key_directory WHERE key_prefix = $1 RETURNING {KEY_COLUMNS}", prefix)
    if deleted is not None:
        await publish(st.redis, st.directory, Change(key=KeyEntry.of(deleted), gone=True))


async def revoke_key(st: RouterState, project_id: uuid.UUID, region: str, key_id: uuid.UUID) -> None:
    """Make the cell revoke a key the directory already marks revoked."""
    response = await st.cells[region].call(
        "DELETE", f"/internal/projects/{project_id}/api-keys/{key_id}", ROUTER)
    if response.status_code not in (200, 404, 421):
        raise Problem(503, f"region {region} refused to revoke a key ({response.status_code})", retry_after=5)


async def _run(st: RouterState, kind: str, project_id: uuid.UUID, payload: dict[str, Any]) -> None:
    if kind == "project.provision":
        row = await st.pool.fetchrow("SELECT name, region, created_at FROM project_directory WHERE id = $1",
                                     project_id)
        if row is not None:
            await provision_project(st, project_id, row["name"], row["region"], row["created_at"])
    elif kind == "key.discard":
        await discard_key(st, project_id, payload["region"], uuid.UUID(payload["key_id"]), payload["key_prefix"])
    elif kind == "key.revoke":
        await revoke_key(st, project_id, payload["region"], uuid.UUID(payload["key_id"]))
    elif kind in ("project.rename", "project.delete"):
        from router.projects import lifecycle  # it records its steps here, so it imports this module

        if kind == "project.rename":
            await lifecycle.rename_in_cell(st, project_id)
        else:
            await lifecycle.run_deletion(st, project_id)
    else:
        raise ValueError(f"unknown outbox kind {kind}")


async def relay(st: RouterState, every: float = 2.0) -> None:
    """Retry pending steps, oldest first, with backoff, until their cell acknowledges them."""
    while True:
        await asyncio.sleep(every)
        try:
            await relay_once(st)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log.warning("outbox relay paused: %s", type(exc).__name__)


async def relay_once(st: RouterState, *, min_age: float = 5.0) -> int:
    """One pass over steps older than `min_age` seconds (younger ones are still in their request)."""
    rows = await st.pool.fetch(
        """SELECT id, project_id, kind, payload FROM outbox
            WHERE dispatched_at IS NULL AND available_at <= now()
              AND created_at <= now() - make_interval(secs => $1)
            ORDER BY id LIMIT 50""", min_age)
    handled = 0
    for row in rows:
        try:
            await _run(st, row["kind"], row["project_id"], row["payload"])
        except Problem as problem:
            await st.pool.execute(
                """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                          available_at = now() + make_interval(secs => least(300, 2 ^ least(attempts, 8)))
                    WHERE id = $1""", row["id"], problem.detail)
            continue
        await done(st, row["id"])
        handled += 1
    return handled
