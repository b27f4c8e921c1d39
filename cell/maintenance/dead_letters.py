"""Dead letters: jobs that exhausted their retries, kept for an operator to read and retry.

The worker writes one when an outbox job's last attempt fails (an exception, a
timeout, or its worker dying), in the same transaction that marks the job no
longer pending. `relay jobs retry` re-enqueues it by writing a fresh outbox row
for that one consumer (`only_job`), pointing at the row it repeats (`retry_of`)
so the queued job keeps its original key, and marks the dead letter retried —
once: a second retry of the same letter is refused, and a retry that fails again
leaves a new dead letter behind.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from common.ids import uuid7

ERROR_CHARS = 4000


class DeadLetter(msgspec.Struct, kw_only=True):
    """One dead letter as `relay jobs dead --json` prints it."""

    id: uuid.UUID
    project_id: uuid.UUID | None
    outbox_id: int | None
    job: str
    kind: str
    payload: dict[str, Any]
    error: str | None
    attempts: int
    failed_at: datetime
    retried_at: datetime | None
    retry_outbox_id: int | None
    region: str | None = None


class AlreadyRetried(Exception):
    """The dead letter was retried before; its retry is outbox row `outbox_id`."""

    def __init__(self, retried_at: datetime, outbox_id: int | None) -> None:
        super().__init__(f"already retried at {retried_at.isoformat()} (outbox row {outbox_id})")
        self.retried_at = retried_at
        self.outbox_id = outbox_id


COLUMNS = "id, project_id, outbox_id, job, kind, payload, error, attempts, failed_at, retried_at, retry_outbox_id"


def clip(error: str | None) -> str | None:
    """The end of an error text (a traceback ends with the exception), bounded."""
    if error is None or len(error) <= ERROR_CHARS:
        return error
    return "…" + error[-ERROR_CHARS:]


async def record(conn: asyncpg.Connection, *, project_id: uuid.UUID | str | None, outbox_id: int | None, job: str,
                 kind: str, payload: dict[str, Any], error: str | None, attempts: int) -> None:
    """Write the dead letter of one consumer of one outbox row.

    The first final failure is kept: a second report of the same job before an operator retried it (the
    sweep finding the already-failed job, say) changes nothing. After a retry, its failure replaces it.
    """
    await conn.execute(
        """INSERT INTO dead_letters (id, project_id, outbox_id, job, kind, payload, error, attempts)
            SELECT $1, p.id, $3, $4, $5, $6, $7, $8
              FROM (SELECT $2::uuid AS wanted) w LEFT JOIN projects p ON p.id = w.wanted
            ON CONFLICT (outbox_id, job) WHERE outbox_id IS NOT NULL
            DO UPDATE SET error = EXCLUDED.error, attempts = EXCLUDED.attempts, failed_at = now()
            WHERE dead_letters.retried_at IS NOT NULL""",
        uuid7(), str(project_id) if project_id is not None else None, outbox_id, job, kind, payload, clip(error),
        attempts,
    )


async def listing(conn: asyncpg.Connection | asyncpg.Pool, *, include_retried: bool = False,
                  limit: int = 200) -> list[DeadLetter]:
    """The newest dead letters first; only those not yet retried unless `include_retried`."""
    where = "TRUE" if include_retried else "retried_at IS NULL"
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM dead_letters WHERE {where} ORDER BY failed_at DESC, id DESC LIMIT $1", limit)
    return [msgspec.convert(dict(r), DeadLetter) for r in rows]


async def retry(conn: asyncpg.Connection, dead_letter_id: uuid.UUID) -> int | None:
    """Re-enqueue one dead letter for its one consumer; the new outbox row's id, or None when there is no
    such dead letter here. Raises AlreadyRetried for a letter retried before."""
    async with conn.transaction():
        row = await conn.fetchrow(f"SELECT {COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE", dead_letter_id)
        if row is None:
            return None
        if row["retried_at"] is not None:
            raise AlreadyRetried(row["retried_at"], row["retry_outbox_id"])
        # The project may be gone (deleted since): then there is nothing left to work on, and the outbox row's
        # foreign key would refuse it; the job runs with no project row, as its payload says. A retry of a
        # retry repeats the first row still.
        outbox_id: int = await conn.fetchval(
            """INSERT INTO outbox (project_id, kind, payload, only_job, retry_of)
               VALUES ((SELECT id FROM projects WHERE id = $1), $2, $3, $4,
                       coalesce((SELECT retry_of FROM outbox WHERE id = $5), $5)) RETURNING id""",
            row["project_id"], row["kind"], row["payload"], row["job"], row["outbox_id"])
        await conn.execute("UPDATE dead_letters SET retried_at = now(), retry_outbox_id = $2 WHERE id = $1",
                           dead_letter_id, outbox_id)
    return outbox_id
