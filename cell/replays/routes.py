"""Replay endpoints: chunk uploads and `finish` from SDKs, and the management list, get and event stream.

A chunk is stored as its own object (gzip, events sorted by time) and indexed in
`replays.chunks` under the replay's row lock, so concurrent uploads never lose
an entry and a repeated index changes nothing. `finish` hands the replay to the
workers through the outbox.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.response import Stream

from cell.auth import READ, require
from cell.context import caller, ctx
from cell.interactions.queries import Filters
from cell.media.queries import interaction_exists
from cell.outbox import add as enqueue
from cell.paging import Page, decode_cursor, limit_of, newest_first
from cell.privacy import scrub
from cell.replays import events, queries
from cell.replays.types import Chunk, ChunkAck, Replay, ReplayDetail, ReplayStatus
from cell.storage import ObjectStore, project_key
from common.problems import FieldError, Problem

MAX_INDEX = 999_999  # chunk keys are `{index:06d}.json.gz`


def _field(pointer: str, message: str) -> Problem:
    return Problem(422, message, errors=[FieldError(pointer, message)])


async def _check_interaction(request: Request[Any, Any, Any], project_id: uuid.UUID,
                             interaction_id: uuid.UUID | None) -> None:
    if interaction_id is not None and not await interaction_exists(ctx(request).pool, project_id, interaction_id):
        raise _field("/interaction_id", "interaction_id does not name an interaction of this project")


@post("/v1/ingest/replays/{replay_id:uuid}/chunks/{index:int}", status_code=201,
      request_max_body_size=events.MAX_WIRE_BYTES)
async def ingest_chunk(request: Request[Any, Any, Any], replay_id: uuid.UUID, index: int,
                       session_id: uuid.UUID | None = None,
                       interaction_id: uuid.UUID | None = None) -> Response[ChunkAck]:
    """Store chunk `index` of a replay (creating the replay on its first chunk); a repeated index is a 200."""
    principal = require(await caller(request), ingest=True)
    pid = principal.project_id
    if session_id is None:
        raise _field("/session_id", "session_id is required: the session this replay records")
    try:
        raw = await events.read_body(aiter(request.stream()), request.headers.get("content-encoding"))
    except (events.TooLarge, RequestEntityTooLarge):
        raise Problem(413, f"a chunk is limited to {events.MAX_WIRE_BYTES} bytes as sent and "
                           f"{events.MAX_JSON_BYTES} bytes decompressed") from None
    if not 0 <= index <= MAX_INDEX:
        raise _field("/index", f"index is between 0 and {MAX_INDEX}")
    await _check_interaction(request, pid, interaction_id)
    cell = ctx(request)
    report = scrub.Report()
    prepared = await asyncio.to_thread(events.prepare, raw, await scrub.rules_for(cell.pool, pid), report)
    created = False
    try:
        async with cell.pool.acquire() as conn, conn.transaction():
            row = await queries.lock_or_create(conn, pid, replay_id, session_id)
            if row is None:
                raise Problem(404, "no such replay")
            if row["session_id"] != session_id:
                raise Problem(409, "this replay belongs to another session")
            chunks: list[dict[str, Any]] = row["chunks"]
            entry = next((e for e in chunks if e["index"] == index), None)
            if entry is None:
                if row["status"] != "recording":
                    raise Problem(409, f"the replay is {row['status']}: it takes no more chunks")
                if interaction_id is not None:
                    await queries.attach(conn, pid, replay_id, interaction_id)
                key = project_key(pid, "replays", str(replay_id), "chunks", f"{index:06d}.json.gz")
                # Stored while the row is locked: a concurrent retry of this index waits and finds it indexed.
                # Should the commit fail, the unindexed object is overwritten by the retry.
                await cell.store.put(key, prepared.gz)
                entry = msgspec.to_builtins(Chunk(index=index, storage_key=key, event_count=prepared.event_count,
                                                  start_time=prepared.start_time, end_time=prepared.end_time))
                await queries.set_chunks(conn, pid, replay_id, sorted([*chunks, entry], key=lambda e: e["index"]))
                if report:
                    await queries.add_redactions(conn, pid, replay_id, report.as_json())
                created = True
            status = row["status"]
    except asyncpg.ForeignKeyViolationError:
        raise _field("/session_id", "session_id does not name a session of this project") from None
    ack = ChunkAck(replay_id=replay_id, status=status, chunk=msgspec.convert(entry, Chunk))
    return Response(ack, status_code=201 if created else 200)


@post("/v1/ingest/replays/{replay_id:uuid}/finish", status_code=202)
async def finish_replay(request: Request[Any, Any, Any], replay_id: uuid.UUID,
                        interaction_id: uuid.UUID | None = None) -> Response[Replay]:
    """The recording is over: hand the replay to the workers (once; repeating it changes nothing)."""
    principal = require(await caller(request), ingest=True)
    pid = principal.project_id
    await _check_interaction(request, pid, interaction_id)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.lock(conn, pid, replay_id)
        if row is None:
            raise Problem(404, "no such replay")
        if interaction_id is not None:
            await queries.attach(conn, pid, replay_id, interaction_id)
        if row["status"] == "recording":
            await queries.set_status(conn, pid, replay_id, "processing")
            await enqueue(conn, pid, "replay.finished", {"replay_id": str(replay_id)})
        out = await queries.get(conn, pid, replay_id)
    assert out is not None  # locked above
    return Response(msgspec.convert(dict(out), Replay), status_code=202)


@get("/v1/projects/{project_id:uuid}/replays")
async def list_replays(
    request: Request[Any, Any, Any],
    project_id: uuid.UUID,
    session_id: uuid.UUID | None = None,
    status: ReplayStatus | None = None,
    interaction_id: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page[Replay]:
    """Replays newest first, by session, status or interaction."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    f = Filters(project_id)
    f.add("session_id = {}", session_id)
    f.add("status = {}", status)
    f.add("interaction_id = {}", interaction_id)
    rows = await queries.page(ctx(request).pool, f, decode_cursor(cursor) if cursor else None, size)
    return newest_first([msgspec.convert(dict(r), Replay) for r in rows], size)


@get("/v1/projects/{project_id:uuid}/replays/{replay_id:uuid}")
async def get_replay(request: Request[Any, Any, Any], project_id: uuid.UUID, replay_id: uuid.UUID) -> ReplayDetail:
    """One replay with its chunk index."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get(ctx(request).pool, project_id, replay_id)
    if row is None:
        raise Problem(404, "no such replay")
    return msgspec.convert(dict(row), ReplayDetail)


def _release(merge: events.Merge, gz: bytes, bound: float) -> list[msgspec.Raw]:
    return merge.add(events.load(gz), bound)


async def _merged(store: ObjectStore, chunks: list[Chunk], first: bytes) -> AsyncIterator[bytes]:
    """The replay's events as one JSON array, one chunk in memory at a time (plus any time overlap)."""
    yield b"["
    merge = events.Merge()
    limits = events.bounds([c.start_time for c in chunks])
    opened = True
    gz: bytes | None = first
    del first
    for i, chunk in enumerate(chunks):
        if gz is None:
            gz = await store.get(chunk.storage_key)
        released = await asyncio.to_thread(_release, merge, gz, limits[i])
        gz = None
        piece = events.json_items(released, opened)
        if piece:
            opened = False
            yield piece
    yield b"]"


@get("/v1/projects/{project_id:uuid}/replays/{replay_id:uuid}/events")
async def replay_events(request: Request[Any, Any, Any], project_id: uuid.UUID, replay_id: uuid.UUID) -> Stream:
    """Every event of the replay, chunks in index order merged by timestamp, streamed as one JSON array.

    A `ready` replay's chunks were all read back and its index corrected by processing, so its stream
    is whole and in order; a `failed` one is refused with the reason rather than cut off mid-stream.
    """
    require(await caller(request, project_id), project_id, level=READ)
    store = ctx(request).store
    row = await queries.get(ctx(request).pool, project_id, replay_id)
    if row is None:
        raise Problem(404, "no such replay")
    if row["status"] == "failed":
        raise Problem(409, f"the replay failed processing: {row['failure_reason']}")
    chunks = sorted(msgspec.convert(row["chunks"], list[Chunk]), key=lambda c: c.index)
    first = await store.get(chunks[0].storage_key) if chunks else b""  # a missing object: 404 before the stream
    return Stream(_merged(store, chunks, first), media_type="application/json",
                  headers={"Cache-Control": "private, max-age=0"})


ROUTES = [ingest_chunk, finish_replay, list_replays, get_replay, replay_events]
