"""Worker jobs of the maintenance area: counters reconciliation, retention, and outbox pruning.

`maintenance.reconcile` and `maintenance.retention` take `{project_id}` (and
retention an optional `batch`, rows per transaction). Cron jobs write one such
outbox row per project (for retention, per project with `retention_days`),
unless one is already waiting, so each project's run is retried and
dead-lettered on its own; `relay jobs run` writes the same rows on demand.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from cell.jobs import Cron, Job
from cell.maintenance import counters, retention

RECONCILE = "maintenance.reconcile"
RETENTION = "maintenance.retention"
OUTBOX_KEEP_DAYS = 7
MAX_BATCH = 10_000


def project_of(payload: dict[str, Any]) -> uuid.UUID:
    """The project a maintenance payload names; a malformed one fails the job (and ends as a dead letter)."""
    try:
        return uuid.UUID(str(payload["project_id"]))
    except (KeyError, ValueError) as exc:
        raise ValueError("maintenance payload needs `project_id`, a UUID") from exc


async def reconcile_job(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Repair the project's drifted counters (idempotent: a second run finds nothing to repair)."""
    await counters.reconcile(ctx["pool"], project_of(payload))


async def retention_job(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Delete the project's data past its retention (resumable: a repeat carries on where a run stopped)."""
    batch = payload.get("batch", retention.BATCH)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"`batch` must be a whole number from 1 to {MAX_BATCH}")
    await retention.purge(ctx["pool"], ctx["store"], project_of(payload), batch=batch)


async def schedule(pool: asyncpg.Pool, kind: str, where: str = "TRUE") -> int:
    """Write a `kind` outbox row for each project matching `where` that has none waiting or running."""
    result: str = await pool.execute(
        f"""INSERT INTO outbox (project_id, kind, payload)
            SELECT p.id, $1, jsonb_build_object('project_id', p.id::text) FROM projects p
             WHERE ({where}) AND NOT EXISTS (
                   SELECT 1 FROM outbox o WHERE o.kind = $1 AND o.project_id = p.id
                      AND (o.dispatched_at IS NULL OR o.pending_jobs <> '{{}}'))""", kind)
    return int(result.split()[-1])


async def schedule_reconcile(ctx: dict[str, Any]) -> int:
    """Hourly: reconcile every project's counters."""
    return await schedule(ctx["pool"], RECONCILE)


async def schedule_retention(ctx: dict[str, Any]) -> int:
    """Daily: apply retention to every project that set `retention_days`."""
    return await schedule(ctx["pool"], RETENTION, "p.settings ? 'retention_days'")


async def prune_outbox(ctx: dict[str, Any]) -> int:
    """Hourly: forget outbox rows finished more than a week ago (their effects are done and recorded)."""
    pool: asyncpg.Pool = ctx["pool"]
    pruned = 0
    while True:
        result: str = await pool.execute(
            """DELETE FROM outbox WHERE id IN (
                   SELECT id FROM outbox
                    WHERE dispatched_at < now() - make_interval(days => $1) AND coalesce(pending_jobs, '{}') = '{}'
                    ORDER BY dispatched_at LIMIT 5000)""", OUTBOX_KEEP_DAYS)
        n = int(result.split()[-1])
        pruned += n
        if n < 5000:
            return pruned


JOBS = [
    Job(RECONCILE, reconcile_job, timeout=600, retries=3, name=RECONCILE),
    Job(RETENTION, retention_job, timeout=3600, retries=5, name=RETENTION),
]
CRONS = [
    Cron("maintenance.schedule_reconcile", schedule_reconcile, cron="17 * * * *", timeout=120),
    Cron("maintenance.schedule_retention", schedule_retention, cron="23 3 * * *", timeout=120),
    Cron("maintenance.prune_outbox", prune_outbox, cron="41 * * * *", timeout=600),
]
