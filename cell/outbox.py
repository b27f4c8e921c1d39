"""The transactional outbox: follow-up work is recorded in the same transaction as the data.

Workers relay pending rows to the queue; a crash or a Redis outage between the
commit and the enqueue therefore loses nothing. Each row also carries the W3C
`traceparent` of the request (or job) that wrote it, so the worker's span for
the job continues that request's trace (see `common.telemetry.job_span`); it
is NULL when tracing is off.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from common.telemetry import current_traceparent


async def add(conn: asyncpg.Connection, project_id: uuid.UUID | None, kind: str, payload: dict[str, Any]) -> None:
    """Record a job to run after the surrounding transaction commits."""
    await conn.execute(
        "INSERT INTO outbox (project_id, kind, payload, traceparent) VALUES ($1, $2, $3, $4)",
        project_id, kind, payload, current_traceparent(),
    )


async def add_many(conn: asyncpg.Connection, jobs: list[tuple[uuid.UUID | None, str, dict[str, Any], str | None]]
                   ) -> None:
    """`add` for many jobs in one statement: (project_id, kind, payload, traceparent).

    Each job names its own `traceparent`: the jobs of a group commit come from several requests.
    """
    await conn.execute(
        """INSERT INTO outbox (project_id, kind, payload, traceparent)
           SELECT project_id, kind, payload, traceparent
             FROM jsonb_to_recordset($1::jsonb) AS r(project_id uuid, kind text, payload jsonb, traceparent text)""",
        [{"project_id": p, "kind": k, "payload": payload, "traceparent": t} for p, k, payload, t in jobs],
    )


async def backlog(pool: asyncpg.Pool) -> int:
    """Rows not yet relayed to the queue: the outbox backlog an operator watches (a gauge reads it)."""
    count: int = await pool.fetchval("SELECT count(*) FROM outbox WHERE dispatched_at IS NULL")
    return count
