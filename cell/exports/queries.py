"""SQL for project exports; the archives and manifests live in the object store under `storage_key`s."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from cell.storage import ObjectStore, project_key

COLUMNS = """id, project_id, status, created_at, started_at, finished_at, size_bytes, sha256, manifest_hash,
    signature, public_key, counts, failure_reason"""


async def insert(conn: asyncpg.Connection, export_id: uuid.UUID, project_id: uuid.UUID,
                 requested_by: str) -> asyncpg.Record:
    """A new export, pending until a worker builds it."""
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO project_exports (id, project_id, requested_by) VALUES ($1, $2, $3) RETURNING {COLUMNS}""",
        export_id, project_id, requested_by)
    return row


async def get(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
              export_id: uuid.UUID) -> asyncpg.Record | None:
    """One export of the project, with its object keys."""
    return await conn.fetchrow(
        f"""SELECT {COLUMNS}, storage_key, manifest_storage_key FROM project_exports
             WHERE project_id = $1 AND id = $2""", project_id, export_id)


async def page(pool: asyncpg.Pool, project_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None,
               limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 exports, newest first, strictly after the cursor position."""
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {COLUMNS} FROM project_exports
             WHERE project_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
             ORDER BY created_at DESC, id DESC LIMIT $4""",
        project_id, after[0] if after else None, after[1] if after else None, limit + 1)
    return rows


async def claim(pool: asyncpg.Pool, export_id: uuid.UUID) -> asyncpg.Record | None:
    """Mark the export running and return it, unless it is finished already (a repeated job: nothing to do)."""
    return await pool.fetchrow(
        f"""UPDATE project_exports SET status = 'running', started_at = now()
             WHERE id = $1 AND status IN ('pending', 'running') RETURNING {COLUMNS}""", export_id)


async def finish(pool: asyncpg.Pool, export_id: uuid.UUID, fields: dict[str, Any]) -> bool:
    """Record a built export (`fields`: storage keys, size, digests, signature, counts) as ready; False when it
    is no longer running (withdrawn meanwhile by an end user's erasure: its archive must not be kept)."""
    status: str = await pool.execute(
        """UPDATE project_exports SET status = 'ready', finished_at = now(), failure_reason = NULL,
                  storage_key = $2, manifest_storage_key = $3, size_bytes = $4, sha256 = $5, manifest_hash = $6,
                  signature = $7, public_key = $8, counts = $9
            WHERE id = $1 AND status = 'running'""",
        export_id, fields["storage_key"], fields["manifest_storage_key"], fields["size_bytes"], fields["sha256"],
        fields["manifest_hash"], fields["signature"], fields["public_key"], fields["counts"])
    return status == "UPDATE 1"


WITHDRAWN = "withdrawn: an end user was erased after it was asked for, and it may hold their data; request another"
EXPIRED = ("withdrawn: the project's retention deleted data older than its limit, which it may hold; "
           "request another")


def prefix(project_id: uuid.UUID, export_id: uuid.UUID) -> str:
    """Where one export's archive and manifest are stored."""
    return project_key(project_id, "exports", str(export_id))


async def withdraw_with_objects(conn: asyncpg.Connection, store: ObjectStore, project_id: uuid.UUID,
                                reason: str = WITHDRAWN) -> tuple[list[uuid.UUID], list[str]]:
    """`withdraw`, and the withdrawn exports' stored objects, which the caller deletes once it commits, with the
    data that made them stale (an end user's erasure, a retention run)."""
    withdrawn = await withdraw(conn, project_id, reason)
    return withdrawn, [k for export_id in withdrawn for k, _ in await store.keys(prefix(project_id, export_id))]


async def withdraw(conn: asyncpg.Connection, project_id: uuid.UUID, reason: str = WITHDRAWN) -> list[uuid.UUID]:
    """Inside an end user's erasure (or a retention run that deleted anything: reason `EXPIRED`): every export of
    the project not failed already becomes `failed` with `reason`, since its archive may hold the rows and bytes
    just deleted; the ids, whose objects the caller deletes with the others. One being built is withdrawn too:
    its finish finds it so and drops its archive."""
    rows = await conn.fetch(
        """UPDATE project_exports SET status = 'failed', finished_at = now(), failure_reason = $2,
                  storage_key = NULL, manifest_storage_key = NULL
            WHERE project_id = $1 AND status <> 'failed' RETURNING id""", project_id, reason)
    return sorted(r["id"] for r in rows)


async def fail(pool: asyncpg.Pool, export_id: uuid.UUID, reason: str) -> None:
    """The export could not be built; the reason names what failed, never data."""
    await pool.execute(
        """UPDATE project_exports SET status = 'failed', finished_at = now(), failure_reason = $2
            WHERE id = $1 AND status <> 'ready'""", export_id, reason)
