"""Replay processing: a finished (or abandoned) recording is checked chunk by chunk and becomes `ready` or
`failed` with a reason.

Ingest trusts each chunk as it arrives; only once the recording is over can one
tell whether it is whole. Processing reads every chunk object back (one at a
time, within the ingest limits), checks the indexes run from 0 without a gap,
and takes the count, first and last event time from the events themselves, not
from the index ingest wrote. The event stream merges chunks by the start times
in that index and needs each chunk in time order, so a chunk object that is
valid but not in that form is rewritten sorted.

The work is done outside any transaction; the outcome is written under the row
lock only if the replay is still `processing`, so a repeated or concurrent run
changes nothing, and a replay already `ready` or `failed` is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec

from cell.outbox import add as enqueue
from cell.replays import events, queries
from cell.replays.types import Chunk
from cell.storage import ObjectStore
from common.problems import Problem

log = logging.getLogger("relay.replays")

FINISHED = "replay.finished"
"""The outbox kind that hands a replay to processing (from `finish` and from the idle close)."""


class Corrupt(Exception):
    """A chunk object that cannot be read back as rrweb events; the message is the failure reason."""


@dataclass(frozen=True)
class Failed:
    """The replay cannot be played: why, in words for the people who wanted to watch it."""

    reason: str


@dataclass(frozen=True)
class Verified:
    """Every chunk read back: the index as the objects say, and the chunks whose objects need rewriting."""

    chunks: list[dict[str, Any]]
    rewrite: list[int] = field(default_factory=list)


def gap(indexes: list[int]) -> str | None:
    """The failure reason when the chunk indexes do not run 0, 1, 2 … without a hole (None when they do).

    A chunk the SDK never delivered leaves a hole in the recording; playing around it would
    show a session that did not happen, so the replay fails instead.
    """
    if not indexes:
        return "no events: no chunk was uploaded"
    for expected, index in enumerate(sorted(indexes)):
        if index != expected:
            return (f"missing chunk {expected}: chunk indexes must run from 0 without gaps "
                    f"({len(indexes)} uploaded, the highest is {max(indexes)})")
    return None


def check(index: int, gz: bytes) -> events.Prepared:
    """One stored chunk decompressed (within the ingest limit) and validated as ingest would; CPU-bound.

    Raises Corrupt with the failure reason.
    """
    inflater = events.Inflater(events.MAX_JSON_BYTES)
    try:
        inflater.feed(gz)
        raw = inflater.result()
        return events.prepare(raw)
    except events.TooLarge:
        raise Corrupt(f"corrupt chunk {index}: over {events.MAX_JSON_BYTES} bytes decompressed") from None
    except Problem as exc:
        if exc.errors:  # the first invalid event, as ingest would have pointed at it
            first = exc.errors[0]
            raise Corrupt(f"corrupt chunk {index}: {first.message} (at {first.pointer or '/'})") from None
        detail = (exc.detail or exc.title).replace("the gzip body", "the object").replace("the body", "the object")
        raise Corrupt(f"corrupt chunk {index}: {detail}") from None


def _entry(chunk: Chunk, prepared: events.Prepared) -> dict[str, Any]:
    entry: dict[str, Any] = msgspec.to_builtins(Chunk(
        index=chunk.index, storage_key=chunk.storage_key, event_count=prepared.event_count,
        start_time=prepared.start_time, end_time=prepared.end_time))
    return entry


async def examine(store: ObjectStore, index: list[dict[str, Any]]) -> Verified | Failed:
    """Read back every chunk the index names, in index order, one object in memory at a time."""
    chunks = sorted(msgspec.convert(index, list[Chunk]), key=lambda c: c.index)
    reason = gap([c.index for c in chunks])
    if reason is not None:
        return Failed(reason)
    out: list[dict[str, Any]] = []
    rewrite: list[int] = []
    for chunk in chunks:
        try:
            gz = await store.get(chunk.storage_key)
        except Problem:
            return Failed(f"missing chunk {chunk.index}: its object is not in storage")
        try:
            prepared = await asyncio.to_thread(check, chunk.index, gz)
        except Corrupt as exc:
            return Failed(str(exc))
        if prepared.gz != gz:
            rewrite.append(chunk.index)
        out.append(_entry(chunk, prepared))
    return Verified(out, rewrite)


async def _normalise(store: ObjectStore, chunk: dict[str, Any]) -> dict[str, Any] | None:
    """Rewrite one chunk object sorted and re-encoded, as ingest stores it; None if it changed meanwhile."""
    key = str(chunk["storageKey"])
    try:
        prepared = await asyncio.to_thread(check, int(chunk["index"]), await store.get(key))
    except (Problem, Corrupt):
        return None
    await store.put(key, prepared.gz)
    return _entry(msgspec.convert(chunk, Chunk), prepared)


async def process(pool: asyncpg.Pool, store: ObjectStore, replay_id: uuid.UUID) -> str | None:
    """Take a `processing` replay to `ready` or `failed`; return the new status (None: left alone).

    Safe to run any number of times, concurrently too: only the run that finds the row still
    `processing` under its lock writes an outcome, and every run computes the same one.
    """
    row = await pool.fetchrow("SELECT project_id, status, chunks FROM replays WHERE id = $1", replay_id)
    if row is None or row["status"] != "processing":
        return None  # erased, or processed already
    outcome = await examine(store, row["chunks"])
    async with pool.acquire() as conn, conn.transaction():
        locked = await queries.lock_processing(conn, replay_id)
        if locked is None:
            return None  # another run got there first, or the replay was erased meanwhile
        project_id: uuid.UUID = locked["project_id"]
        if locked["chunks"] != row["chunks"]:
            raise RuntimeError(f"replay {replay_id} changed while processing")  # retried from scratch
        if isinstance(outcome, Verified) and outcome.rewrite:
            # Written under the row lock, like ingest: an erasure waits and then finds these keys too.
            for i in outcome.rewrite:
                entry = await _normalise(store, outcome.chunks[i])
                if entry is None:
                    raise RuntimeError(f"chunk {i} of replay {replay_id} changed while processing")
                outcome.chunks[i] = entry
        if isinstance(outcome, Failed):
            await queries.mark_failed(conn, project_id, replay_id, outcome.reason)
            log.info("replay %s failed: %s", replay_id, outcome.reason)
            return "failed"
        await queries.mark_ready(conn, project_id, replay_id, outcome.chunks)
        return "ready"


async def close_idle(pool: asyncpg.Pool, idle_seconds: float, batch: int = 500) -> int:
    """Close replays whose SDK went quiet without finishing: into `processing`, with their outbox job.

    A tab closed mid-recording never sends `finish`; after `idle_seconds` without a chunk the
    replay is processed as if it had. Each batch commits with its jobs, so a crash loses none.
    """
    closed = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await queries.close_idle(conn, idle_seconds, batch)
            for r in rows:
                await enqueue(conn, r["project_id"], FINISHED, {"replay_id": str(r["id"]), "idle": True})
        closed += len(rows)
        if len(rows) < batch:
            break
    if closed:
        log.info("closed %d idle replays", closed)
    return closed
