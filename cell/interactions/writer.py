"""Group commit of ingested interactions: concurrent requests share one transaction.

An ingest request validates and scrubs its interaction, hands the rows to its
process's `Writer` and waits. The writer commits what has queued up in one
transaction of a few set-based statements (cell/interactions/queries.py), then
answers each request of the batch: nothing is acknowledged before the batch
that holds it committed. There is no timer: a request that finds fewer than
`IN_FLIGHT` batches committing is committed at once, and batches grow only
while earlier ones are in flight, so batching adds no wait when the cell is
not busy.

Each request gets what a transaction of its own would have given it:

- a client-supplied `id` already stored (or twice in one batch) → 200 with the
  stored row and nothing else written, not its user, session or logs;
- a `session_id` of another project → 422 for that request alone;
- an id another project uses → 409.

Whatever else makes a batch fail (a project fenced by a move, a deadlock, a
value Postgres refuses, the database gone) is not the batch's answer: each of
its requests is then written in its own transaction and gets its own result,
error included.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from cell import outbox, users
from cell.interactions import queries
from cell.privacy import scrub
from common import metrics
from common.ids import uuid7

log = logging.getLogger("relay.cell.ingest")

MAX_BATCH = 64
"""Most interactions one transaction takes."""
IN_FLIGHT = 2
"""Most batches committing at once per process: one fills while another commits."""
RACES = 5
"""Attempts of a batch that loses a race for an id it had found free, before giving up."""

BATCHES = metrics.counts("relay.cell.ingest.batches", ("relay.region", "result"),
                         "Group commits of ingested interactions: `committed`, or `split` into one transaction "
                         "per request after the batch failed")
BATCHED = metrics.counts("relay.cell.ingest.batched", ("relay.region",),
                         "Interactions written by group commits (÷ batches committed: the mean batch size)")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request gets back: 201 stored now, 200 stored before (the row as stored), 409 the id is
    another project's, 422 the session is another project's."""

    status: int
    row: asyncpg.Record | None = None


@dataclass(slots=True)
class Pending:
    """One interaction waiting for its batch, as the ingest route prepared it."""

    row: dict[str, Any]
    """The interactions row, keyed as `queries.insert` takes it; `user_id` is filled in by the writer."""
    user: users.Claim | None
    """The `user` sent, already checked against the project's identity secret."""
    logs: tuple[Any, Any, Any] | None
    """Console, network and error logs, already scrubbed."""
    traceparent: str | None
    """The trace of the request, for its outbox row."""
    done: asyncio.Future[Outcome | BaseException | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    """Set by the writer: the outcome, the error that failed the request, or None to write it alone."""

    @property
    def id(self) -> uuid.UUID:
        value: uuid.UUID = self.row["id"]
        return value

    @property
    def project_id(self) -> uuid.UUID:
        value: uuid.UUID = self.row["project_id"]
        return value

    @property
    def session_id(self) -> uuid.UUID | None:
        value: uuid.UUID | None = self.row["session_id"]
        return value


class _Raced(Exception):
    """An id found free at the start of the batch was stored by a concurrent transaction before the insert."""


class Writer:
    """The group commit of one API process; opened and closed by the app's lifespan."""

    def __init__(self, pool: asyncpg.Pool, region: str, *, max_batch: int = MAX_BATCH,
                 in_flight: int = IN_FLIGHT) -> None:
        self.pool = pool
        self.region = region
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._queue: list[Pending] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def store(self, item: Pending) -> Outcome:
        """Write one interaction with the next batch; returns once it is committed (or raises why not)."""
        self._queue.append(item)
        # A flusher that found the queue empty has finished, though its set entry goes only on its done
        # callback (which may run after this): counting it would leave this item with no flusher.
        if sum(not task.done() for task in self._flushers) < self.in_flight:
            task = asyncio.create_task(self._flush())  # starts next turn: requests arriving meanwhile join
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        result = await asyncio.shield(item.done)  # a cancelled request leaves its batch alone
        if result is None:  # its batch failed: write it alone, so that any error is its own
            return (await self.commit([item]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def close(self) -> None:
        """Wait for the batches in flight (their requests are waiting for them)."""
        while self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
            try:
                outcomes = await self.commit(batch)
            except Exception as exc:  # noqa: BLE001 - answered below: never dropped, never a 2xx
                if len(batch) == 1:
                    _answer(batch[0], exc)
                    continue
                # One request's bad row must not fail its neighbours: each is written again alone, where an
                # error that is one request's is raised for that request only.
                log.warning("ingest batch of %d failed (%s); writing its requests one by one",
                            len(batch), type(exc).__name__)
                BATCHES.add((self.region, "split"))
                for item in batch:
                    _answer(item, None)
                continue
            except BaseException:  # cancelled mid-commit (shutdown): each request writes its item alone
                for item in batch:
                    _answer(item, None)
                raise
            BATCHES.add((self.region, "committed"))
            BATCHED.add((self.region,), len(batch))
            for item, outcome in zip(batch, outcomes, strict=True):
                _answer(item, outcome)

    async def commit(self, batch: list[Pending]) -> list[Outcome]:
        """Write a batch in one transaction; the outcome of each of its items, in order."""
        # End users' traits are scrubbed by their project's rules (cached per process: rarely a query).
        rules = {pid: await scrub.rules_for(self.pool, pid) for pid in {i.project_id for i in batch if i.user}}
        for _ in range(RACES):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    written, foreign = await _write(conn, batch, rules)
                break
            except _Raced:
                continue
        else:
            raise RuntimeError(f"an ingest batch lost the race for its ids {RACES} times")
        stored = {row["id"]: row for row in written.values()}
        missing = [i.id for i in batch if i.id not in stored]
        found = await queries.get_many(self.pool, missing) if missing else {}
        outcomes = []
        for item in batch:
            mine = written.get(id(item))
            row = stored[item.id] if item.id in stored else found.get(item.id)
            if mine is not None:
                outcomes.append(Outcome(201, mine))
            elif row is not None and row["project_id"] == item.project_id:
                outcomes.append(Outcome(200, row))
            elif row is None and id(item) in foreign:
                outcomes.append(Outcome(422))
            else:
                outcomes.append(Outcome(409))
        return outcomes


async def _write(conn: asyncpg.Connection, batch: list[Pending],
                 rules: dict[uuid.UUID, scrub.Rules]) -> tuple[dict[int, asyncpg.Record], set[int]]:
    """The batch's statements: rows inserted (by `id()` of their item) and the items whose session is
    another project's. Locks are taken users first, then sessions, each in key order."""
    taken = await queries.taken(conn, [i.id for i in batch])
    session_ids = list({i.session_id for i in batch if i.session_id is not None})
    owners = await queries.session_projects(conn, session_ids) if session_ids else {}
    fresh: list[Pending] = []
    foreign: set[int] = set()
    seen: set[uuid.UUID] = set()
    for item in batch:
        if item.id in taken or item.id in seen:
            continue
        owner = owners.get(item.session_id) if item.session_id is not None else None
        if owner is not None and owner != item.project_id:
            foreign.add(id(item))
            continue
        seen.add(item.id)
        fresh.append(item)
    if not fresh:
        return {}, foreign
    known = [(i.project_id, i.user) for i in fresh if i.user is not None]
    user_ids = await users.upsert_many(conn, known, rules) if known else {}
    for item in fresh:
        item.row["user_id"] = user_ids[(item.project_id, item.user.user.external_id)] if item.user else None
    in_sessions = [(i.project_id, i.session_id, i.row["user_id"]) for i in fresh if i.session_id is not None]
    if in_sessions:
        await queries.ensure_sessions(conn, in_sessions)
    rows = await queries.insert_many(conn, [i.row for i in fresh])
    if len(rows) != len(fresh):
        raise _Raced
    if in_sessions:
        await queries.count_on_sessions(conn, in_sessions)
    logs = [{"id": uuid7(), "project_id": i.project_id, "interaction_id": i.id, "console": i.logs[0],
             "network": i.logs[1], "errors": i.logs[2]} for i in fresh if i.logs is not None]
    if logs:
        await queries.insert_logs_many(conn, logs)
    await outbox.add_many(conn, [(i.project_id, "interaction.created", {"interaction_id": str(i.id)},
                                  i.traceparent) for i in fresh])
    by_id = {row["id"]: row for row in rows}
    return {id(i): by_id[i.id] for i in fresh}, foreign


def _answer(item: Pending, result: Outcome | BaseException | None) -> None:
    if not item.done.done():
        item.done.set_result(result)
