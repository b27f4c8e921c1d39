"""SQL for feature flags."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from common.ids import uuid7

COLUMNS = "id, project_id, flag, enabled, created_at, updated_at"


async def flags_of(pool: asyncpg.Pool, project_id: uuid.UUID) -> dict[str, bool]:
    """Every flag of the project → whether it is on (what SDKs evaluate)."""
    rows = await pool.fetch("SELECT flag, enabled FROM feature_flags WHERE project_id = $1 ORDER BY flag",
                            project_id)
    return {r["flag"]: r["enabled"] for r in rows}


async def insert(conn: asyncpg.Connection, project_id: uuid.UUID, flag: str, enabled: bool) -> asyncpg.Record | None:
    """Store a new flag; None when the project already has one of that name."""
    return await conn.fetchrow(
        f"""INSERT INTO feature_flags (id, project_id, flag, enabled) VALUES ($1, $2, $3, $4)
            ON CONFLICT (project_id, flag) DO NOTHING RETURNING {COLUMNS}""",
        uuid7(), project_id, flag, enabled,
    )


async def get(pool: asyncpg.Pool, project_id: uuid.UUID, flag_id: uuid.UUID) -> asyncpg.Record | None:
    """One flag of the project."""
    return await pool.fetchrow(
        f"SELECT {COLUMNS} FROM feature_flags WHERE project_id = $1 AND id = $2", project_id, flag_id)


async def page(pool: asyncpg.Pool, project_id: uuid.UUID, enabled: bool | None,
               after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 flags, newest first, strictly after the cursor position."""
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {COLUMNS} FROM feature_flags
             WHERE project_id = $1 AND ($2::boolean IS NULL OR enabled = $2)
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
             ORDER BY created_at DESC, id DESC LIMIT $5""",
        project_id, enabled, after[0] if after else None, after[1] if after else None, limit + 1,
    )
    return rows


async def update(conn: asyncpg.Connection, project_id: uuid.UUID, flag_id: uuid.UUID,
                 changes: dict[str, Any]) -> asyncpg.Record | None:
    """Apply `changes` (column → value, columns from a fixed set) to one flag."""
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
    return await conn.fetchrow(
        f"""UPDATE feature_flags SET {sets}, updated_at = now() WHERE project_id = $1 AND id = $2
            RETURNING {COLUMNS}""",
        project_id, flag_id, *changes.values(),
    )


async def delete(conn: asyncpg.Connection, project_id: uuid.UUID, flag_id: uuid.UUID) -> asyncpg.Record | None:
    """Remove one flag; its last state, or None when there was none."""
    return await conn.fetchrow(
        f"DELETE FROM feature_flags WHERE project_id = $1 AND id = $2 RETURNING {COLUMNS}", project_id, flag_id)
