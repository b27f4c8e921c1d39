"""SQL for media rows; the bytes live in the object store under `storage_key`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from cell.storage import Stored

COLUMNS = """id, interaction_id, kind, content_type, size_bytes, sha256, created_at,
    coalesce(meta -> 'metadata_removed', '[]'::jsonb) AS metadata_removed"""


async def interaction_exists(pool: asyncpg.Pool, project_id: uuid.UUID, interaction_id: uuid.UUID) -> bool:
    """Whether the interaction is the project's (checked before any byte is read)."""
    found: bool = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM interactions WHERE project_id = $1 AND id = $2)", project_id, interaction_id,
    )
    return found


async def insert(conn: asyncpg.Connection | asyncpg.Pool, media_id: uuid.UUID, project_id: uuid.UUID,
                 interaction_id: uuid.UUID, kind: str, content_type: str, stored: Stored,
                 meta: dict[str, Any] | None = None) -> asyncpg.Record:
    """Record bytes that are already stored (FK violation if the interaction went away meanwhile, unique
    violation if the id is taken). `meta`: what metadata was removed, the digest of the bytes as sent."""
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO media (id, project_id, interaction_id, kind, storage_key, content_type, size_bytes, sha256,
                               meta)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            RETURNING {COLUMNS}""",
        media_id, project_id, interaction_id, kind, stored.key, content_type, stored.size, stored.sha256, meta or {},
    )
    return row


async def strips_metadata(pool: asyncpg.Pool, project_id: uuid.UUID) -> bool:
    """Whether the project's images lose their metadata on the way in (its settings; yes unless turned off)."""
    off: bool = await pool.fetchval(
        "SELECT settings -> 'strip_image_metadata' = 'false'::jsonb FROM projects WHERE id = $1", project_id)
    return not off


async def get(pool: asyncpg.Pool, project_id: uuid.UUID, media_id: uuid.UUID) -> asyncpg.Record | None:
    """One media row of the project, with its storage key."""
    return await pool.fetchrow(
        f"SELECT {COLUMNS}, storage_key, meta FROM media WHERE project_id = $1 AND id = $2", project_id, media_id,
    )


async def page(pool: asyncpg.Pool, project_id: uuid.UUID, interaction_id: uuid.UUID,
               after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 media of an interaction, newest first, strictly after the cursor position."""
    params: list[object] = [project_id, interaction_id, limit + 1]
    keyset = ""
    if after is not None:
        params.extend(after)
        keyset = "AND (created_at, id) < ($4, $5)"
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {COLUMNS} FROM media WHERE project_id = $1 AND interaction_id = $2 {keyset}
             ORDER BY created_at DESC, id DESC LIMIT $3""",
        *params,
    )
    return rows


async def delete(conn: asyncpg.Connection, project_id: uuid.UUID, media_id: uuid.UUID) -> asyncpg.Record | None:
    """Remove the row; its kind and storage key, or None when it is not the project's."""
    return await conn.fetchrow(
        "DELETE FROM media WHERE project_id = $1 AND id = $2 RETURNING kind, storage_key", project_id, media_id,
    )
