"""Counters reconciliation: recompute each stored counter from the rows it counts and repair drift.

The API keeps counters exact by changing them in the transaction that inserts or
deletes the counted row; this job is the safety net for whatever slipped past
(a bug, a manual fix in SQL, a restore). It never writes a row that is right.

Drift is found with one grouped query per counter, without locks. Each batch of
drifted rows is then repaired in its own transaction that first locks those
rows and only then recounts, in a new statement: every transaction that changed
a counter holds that row's lock until it commits, so once the lock is ours the
recount sees every counted row committed with it, and a transaction still to
come adds its own +1 to the repaired value. A recount without the lock could
overwrite a concurrent increment with a count that missed it. Lock waits are
capped (`LOCK_TIMEOUT`): maintenance yields to live traffic, fails, and is
retried later with backoff.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import asyncpg

from cell import audit
from cell.auth import Principal
from cell.feedback import demand

log = logging.getLogger("relay.maintenance")

LOCK_TIMEOUT = "2s"
BATCH = 1000


@dataclass(frozen=True)
class Counter:
    """Columns of `table` derived from the rows of `child` that point at it through `fk`.

    `values` maps each column to (aggregate over the child rows `c`, its value when there are none); the
    latter may name the column itself (`p.column`) to mean "leave it as it is".
    """

    table: str
    child: str
    """The counted rows: a table, or a parenthesised query with `project_id` and the `fk` column."""
    fk: str
    values: tuple[tuple[str, str, str], ...]

    @property
    def name(self) -> str:
        """How results and audit entries name the counter: `table.column`."""
        return f"{self.table}.{self.values[0][0]}"

    def _aggregates(self, where: str) -> str:
        aggs = ", ".join(f"{agg} AS v{i}" for i, (_, agg, _) in enumerate(self.values))
        return f"SELECT c.{self.fk} AS id, {aggs} FROM {self.child} c WHERE {where} GROUP BY c.{self.fk}"

    def _computed(self, i: int) -> str:
        empty = self.values[i][2]
        return f"coalesce(a.v{i}, {empty})"

    def _differs(self) -> str:
        return " OR ".join(f"p.{col} IS DISTINCT FROM {self._computed(i)}" for i, (col, _, _) in enumerate(self.values))

    def detect_sql(self) -> str:
        """Ids of drifted rows of one project ($1) after id $2, at most $3."""
        return f"""SELECT p.id FROM {self.table} p
                     LEFT JOIN ({self._aggregates("c.project_id = $1")}) a ON a.id = p.id
                    WHERE p.project_id = $1 AND p.id > $2 AND ({self._differs()})
                    ORDER BY p.id LIMIT $3"""

    def repair_sql(self) -> str:
        """Recount rows $2 of project $1 and write those that are wrong; their ids."""
        sets = ", ".join(f"{col} = {self._computed(i)}" for i, (col, _, _) in enumerate(self.values))
        picked = self._aggregates(f"c.project_id = $1 AND c.{self.fk} = ANY($2::uuid[])")
        return f"""UPDATE {self.table} p SET {sets}
                     FROM (SELECT x.id, {", ".join(f"g.v{i}" for i in range(len(self.values)))}
                             FROM unnest($2::uuid[]) AS x(id) LEFT JOIN ({picked}) g ON g.id = x.id) a
                    WHERE p.project_id = $1 AND p.id = a.id AND ({self._differs()})
                    RETURNING p.id"""


COUNT = "count(*)"
COUNTERS = (
    Counter("feedback_items", "feedback_votes", "feedback_item_id", (("vote_count", COUNT, "0"),)),
    # An item counts the interactions it reaches: linked, or in a linked interaction's confirmed group.
    Counter("feedback_items", f"({demand.REACHED})", "feedback_item_id", (("linked_interaction_count", COUNT, "0"),)),
    Counter("surveys", "survey_responses", "survey_id", (("response_count", COUNT, "0"),)),
    # A conversation's last message time is its newest message's; one without messages keeps its own.
    Counter("conversations", "messages", "conversation_id",
            (("message_count", COUNT, "0"), ("last_message_at", "max(c.created_at)", "p.last_message_at"))),
    Counter("roadmap_items", "roadmap_feedback_links", "roadmap_item_id", (("linked_feedback_count", COUNT, "0"),)),
    Counter("sessions", "interactions", "session_id", (("interaction_count", COUNT, "0"),)),
)

NIL = uuid.UUID(int=0)


async def _repair(pool: asyncpg.Pool, counter: Counter, project_id: uuid.UUID, ids: list[uuid.UUID]) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(
            f"SELECT 1 FROM {counter.table} WHERE project_id = $1 AND id = ANY($2::uuid[]) ORDER BY id FOR UPDATE",
            project_id, ids)
        return len(await conn.fetch(counter.repair_sql(), project_id, ids))


async def reconcile(pool: asyncpg.Pool, project_id: uuid.UUID) -> dict[str, int]:
    """Repair every drifted counter of one project; how many rows were fixed, per counter (zeros left out).

    An audit entry `counters.repaired` records the counts when anything was fixed.
    """
    fixed: dict[str, int] = {}
    for counter in COUNTERS:
        after = NIL
        while True:
            ids = [r[0] for r in await pool.fetch(counter.detect_sql(), project_id, after, BATCH)]
            if not ids:
                break
            repaired = await _repair(pool, counter, project_id, ids)
            if repaired:
                fixed[counter.name] = fixed.get(counter.name, 0) + repaired
            if len(ids) < BATCH:
                break
            after = ids[-1]
    if fixed:
        log.info("reconcile: project %s had drifted counters, repaired %s", project_id, fixed)
        async with pool.acquire() as conn, conn.transaction():
            exists = await conn.fetchval("SELECT 1 FROM projects WHERE id = $1", project_id)
            if exists:
                await audit.record(conn, system_principal(project_id, "reconcile"), "counters.repaired", "project",
                                   project_id, {"rows": fixed})
    return fixed


def system_principal(project_id: uuid.UUID, actor_id: str) -> Principal:
    """The actor of audit entries written by the cell's own maintenance jobs."""
    return Principal(project_id=project_id, level=0, ingest=False, actor_type="system", actor_id=actor_id, ip=None)
