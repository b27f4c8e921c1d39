"""Audit log entries, written in the same transaction as the change they record."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from cell.auth import Principal
from common.ids import uuid7
from common.netaddr import truncate_ip


async def record(
    conn: asyncpg.Connection, principal: Principal, action: str, target_type: str, target_id: object,
    meta: dict[str, Any] | None = None, *, project_id: uuid.UUID | None = None,
) -> None:
    """Write one audit entry for a management change by `principal`; its IP truncated."""
    await conn.execute(
        """INSERT INTO audit_logs (id, project_id, actor_type, actor_id, action, target_type, target_id,
                                   meta, ip_address)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        uuid7(), project_id or principal.project_id, principal.actor_type, principal.actor_id, action,
        target_type, str(target_id), meta or {}, truncate_ip(principal.ip),
    )
