"""The transactional outbox: follow-up work is recorded in the same transaction as the data.

Workers relay pending rows to the queue; a crash or a Redis outage between the
commit and the enqueue therefore loses nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


async def add(conn: asyncpg.Connection, project_id: uuid.UUID | None, kind: str, payload: dict[str, Any]) -> None:
    """Record a job to run after the surrounding transaction commits."""
    await conn.execute(
        "INSERT INTO outbox (project_id, kind, payload) VALUES ($1, $2, $3)", project_id, kind, payload,
    )
