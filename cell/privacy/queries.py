"""SQL for privacy rules."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from cell.privacy.scrub import DEFAULT_RULES, SCOPES
from common.ids import uuid7

COLUMNS = "id, project_id, name, enabled, rule, created_at, updated_at"


async def insert_defaults(conn: asyncpg.Connection, project_id: uuid.UUID) -> None:
    """A new project's rules: redact credentials, payment cards and bearer tokens everywhere."""
    await conn.executemany(
        "INSERT INTO privacy_rules (id, project_id, name, enabled, rule) VALUES ($1, $2, $3, true, $4)",
        [(uuid7(), project_id, name, {"type": "pattern", "pattern": name, "selector": None, "scope": list(SCOPES)})
         for name in DEFAULT_RULES],
    )


async def insert(conn: asyncpg.Connection, project_id: uuid.UUID, name: str, enabled: bool,
                 rule: dict[str, Any]) -> asyncpg.Record:
    """Store a new rule."""
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO privacy_rules (id, project_id, name, enabled, rule) VALUES ($1, $2, $3, $4, $5)
            RETURNING {COLUMNS}""",
        uuid7(), project_id, name, enabled, rule,
    )
    return row


async def get(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
              rule_id: uuid.UUID) -> asyncpg.Record | None:
    """One rule of the project."""
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM privacy_rules WHERE project_id = $1 AND id = $2", project_id, rule_id)


async def page(pool: asyncpg.Pool, project_id: uuid.UUID, enabled: bool | None,
               after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 rules, newest first, strictly after the cursor position."""
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {COLUMNS} FROM privacy_rules
             WHERE project_id = $1 AND ($2::boolean IS NULL OR enabled = $2)
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
             ORDER BY created_at DESC, id DESC LIMIT $5""",
        project_id, enabled, after[0] if after else None, after[1] if after else None, limit + 1,
    )
    return rows


async def update(conn: asyncpg.Connection, project_id: uuid.UUID, rule_id: uuid.UUID,
                 changes: dict[str, Any]) -> asyncpg.Record | None:
    """Apply `changes` (column → value, columns from a fixed set) to one rule."""
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
    return await conn.fetchrow(
        f"""UPDATE privacy_rules SET {sets}, updated_at = now() WHERE project_id = $1 AND id = $2
            RETURNING {COLUMNS}""",
        project_id, rule_id, *changes.values(),
    )


async def delete(conn: asyncpg.Connection, project_id: uuid.UUID, rule_id: uuid.UUID) -> asyncpg.Record | None:
    """Remove one rule; its last state, or None when there was none."""
    return await conn.fetchrow(
        f"DELETE FROM privacy_rules WHERE project_id = $1 AND id = $2 RETURNING {COLUMNS}", project_id, rule_id)
