"""Internal endpoints of a move, for the router acting as itself (never reachable with a key or a session).

The router streams a project from the source cell's export endpoints into the
target cell's import endpoints, batch by batch; cells never call each other,
and the router keeps nothing (see router/moves). Paths are
`/internal/moves/{project_id}/…`:

    source  POST begin · GET tables/{t}/rows · POST changes · POST changes/ack · GET objects(/content)
            POST fence · GET jobs · POST release · POST purge · POST unfence
    target  POST prepare · PUT tables/{t}/rows · POST changes/apply · PUT|DELETE objects/content
            POST activate · POST discard
    both    GET state · GET plan · GET checksums
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.response import Stream

from cell.context import ctx
from cell.moves import queries, states
from cell.moves.schema import Plan, read_plan
from cell.moves.types import (
    Ack,
    ActivateIn,
    Changes,
    ChangesIn,
    Checksums,
    EpochIn,
    ObjectInfo,
    ObjectList,
    PendingJobs,
    Placement,
    PlanOut,
    PurgeIn,
    Receipt,
    ReleaseIn,
    TableInfo,
    Written,
)
from cell.projects.routes import require_router
from cell.storage import TooLarge
from common.problems import Problem

BASE = "/internal/moves/{project_id:uuid}"
MiB = 1024 * 1024
MAX_BATCH_BYTES = 64 * MiB
MAX_OBJECT_BYTES = 5 * 1024 * MiB


async def _plan(request: Request[Any, Any, Any]) -> Plan:
    async with ctx(request).pool.acquire() as conn:
        return await read_plan(conn)


async def _placement(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Placement:
    place = await ctx(request).auth.placement(project_id, fresh=True)
    return Placement(project_id=project_id, state=place.state, epoch=place.epoch or None, region=place.region)


async def _require(request: Request[Any, Any, Any], project_id: uuid.UUID, *states_: str) -> None:
    """The project must be in one of these states here (409 otherwise)."""
    place = await ctx(request).auth.placement(project_id, fresh=True)
    if place.state not in states_:
        raise Problem(409, f"the project is {place.state} in this region, not {' or '.join(states_)}")


@get(BASE + "/state")
async def state(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Placement:
    """Where the project stands here."""
    require_router(request)
    return await _placement(request, project_id)


@get(BASE + "/plan")
async def plan(request: Request[Any, Any, Any], project_id: uuid.UUID) -> PlanOut:
    """The tables a move copies, parents first."""
    require_router(request)
    found = await _plan(request)
    return PlanOut(tables=[TableInfo(name=t.name, key=list(t.key)) for t in found.tables])


@post(BASE + "/prepare", status_code=200)
async def prepare(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Placement:
    """Target, before a move's first copy: clear anything an earlier, abandoned attempt left here."""
    require_router(request)
    c = ctx(request)
    await states.discard(c.pool, c.store, project_id)
    return await _placement(request, project_id)


@post(BASE + "/begin", status_code=200)
async def begin(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Placement:
    """Source: log every change of the project from now on (active → copying)."""
    require_router(request)
    await states.begin(ctx(request).pool, project_id)
    return await _placement(request, project_id)


@get(BASE + "/tables/{table:str}/rows")
async def export_rows(request: Request[Any, Any, Any], project_id: uuid.UUID, table: str, after: str | None = None,
                      limit: int = 500, max_bytes: int = 4 * MiB) -> Response[bytes]:
    """Source: the next batch of a table's rows in key order, as a JSON array; `X-Relay-Next` is the cursor.

    Values sealed with this cell's key travel opened, for the target to seal with its own (cell/sealed.py)."""
    require_router(request)
    if not 1 <= limit <= 10_000 or not 1 <= max_bytes <= MAX_BATCH_BYTES // 2:
        raise Problem(422, "limit or max_bytes out of range")
    await _require(request, project_id, *queries.MOVING)
    found = (await _plan(request)).table(table)
    async with ctx(request).pool.acquire() as conn:
        body, count, cursor = await queries.export_rows(
            conn, found, project_id, queries.decode_cursor(after) if after else None, limit, max_bytes,
            ctx(request).settings.secret_key)
    headers = {"x-relay-count": str(count)}
    if cursor is not None:
        headers["x-relay-next"] = cursor
    return Response(body, media_type="application/json", headers=headers)


@put(BASE + "/tables/{table:str}/rows", status_code=200, request_max_body_size=MAX_BATCH_BYTES)
async def import_rows(request: Request[Any, Any, Any], project_id: uuid.UUID, table: str) -> Written:
    """Target: upsert an exported batch (idempotent: the same batch again changes nothing)."""
    require_router(request)
    c = ctx(request)
    plan_ = await _plan(request)
    rows = (await request.body()).decode()
    written = await queries.import_rows(c.pool, plan_, plan_.table(table), project_id, c.settings.region, rows,
                                        c.settings.secret_key)
    return Written(written=written)


@post(BASE + "/changes", status_code=200)
async def read_changes(request: Request[Any, Any, Any], project_id: uuid.UUID, data: ChangesIn) -> Response[bytes]:
    """Source: the oldest logged changes, each as the row now is (or the key of a row now gone)."""
    require_router(request)
    await _require(request, project_id, *queries.MOVING)
    c = ctx(request)
    body = await queries.read_changes(c.pool, await _plan(request), project_id, data.tables, data.limit,
                                      data.max_bytes, c.settings.secret_key)
    return Response(body, media_type="application/json")


@post(BASE + "/changes/apply", status_code=200, request_max_body_size=MAX_BATCH_BYTES)
async def apply_changes(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Written:
    """Target: apply a batch read from the source's change log, in one transaction."""
    require_router(request)
    c = ctx(request)
    try:
        changes = msgspec.json.decode(await request.body(), type=Changes)
    except msgspec.DecodeError as exc:
        raise Problem(422, f"not a batch of changes: {exc}") from None
    written, deleted = await queries.apply_changes(c.pool, await _plan(request), project_id, c.settings.region,
                                                   changes, c.settings.secret_key)
    return Written(written=written, deleted=deleted)


@post(BASE + "/changes/ack", status_code=200)
async def ack_changes(request: Request[Any, Any, Any], project_id: uuid.UUID, data: Ack) -> Written:
    """Source: forget changes the target applied."""
    require_router(request)
    return Written(written=0, deleted=await queries.ack_changes(ctx(request).pool, project_id, data.seqs))


@get(BASE + "/checksums")
async def checksums(request: Request[Any, Any, Any], project_id: uuid.UUID, objects: str = "hash",
                    nonce: str = "") -> Checksums:
    """Both sides: rows and a hash per table, and the objects (`objects=size` skips reading their bytes).

    The router sends both cells the same fresh `nonce`: it keys the digest of the opened secrets."""
    require_router(request)
    if len(nonce) > 128:
        raise Problem(422, "nonce is at most 128 characters")
    c = ctx(request)
    place = await _placement(request, project_id)
    tables = await queries.table_sums(c.pool, await _plan(request), project_id, c.settings.secret_key, nonce)
    listed = await queries.list_objects(c.store, project_id, with_hash=objects == "hash")
    return Checksums(state=place.state, tables=tables, objects=queries.object_sum(listed))


@get(BASE + "/objects")
async def list_objects(request: Request[Any, Any, Any], project_id: uuid.UUID, hash: bool = False) -> ObjectList:
    """Both sides: the project's objects with their sizes (and SHA-256 with `hash=true`)."""
    require_router(request)
    return ObjectList(data=await queries.list_objects(ctx(request).store, project_id, with_hash=hash))


@get(BASE + "/objects/content")
async def object_content(request: Request[Any, Any, Any], project_id: uuid.UUID, key: str) -> Stream:
    """Source: one object's bytes, streamed."""
    require_router(request)
    chunks = ctx(request).store.stream(queries.check_key(project_id, key))
    first = await anext(chunks, b"")  # a missing object is a 404 now, not a broken stream later

    async def content() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk

    return Stream(content(), media_type="application/octet-stream")


@put(BASE + "/objects/content", status_code=200, request_max_body_size=MAX_OBJECT_BYTES)
async def put_object(request: Request[Any, Any, Any], project_id: uuid.UUID, key: str) -> ObjectInfo:
    """Target: store one object under the same key (replacing a partial copy)."""
    require_router(request)
    await _require(request, project_id, "importing")
    c = ctx(request)
    checked = queries.check_key(project_id, key)
    try:
        stored = await c.store.put_stream(checked, request.stream(), MAX_OBJECT_BYTES)
    except TooLarge:
        raise Problem(413, "object too large for a move") from None
    return ObjectInfo(key=stored.key, size=stored.size, sha256=stored.sha256)


@delete(BASE + "/objects/content", status_code=204)
async def delete_object(request: Request[Any, Any, Any], project_id: uuid.UUID, key: str) -> None:
    """Target: remove an object the source no longer has."""
    require_router(request)
    await _require(request, project_id, "importing")
    await ctx(request).store.delete(queries.check_key(project_id, key))


@post(BASE + "/fence", status_code=200)
async def fence(request: Request[Any, Any, Any], project_id: uuid.UUID, data: EpochIn) -> Placement:
    """Source: refuse writes from now on (503 + Retry-After), with the directory's new epoch."""
    require_router(request)
    await states.fence(ctx(request).pool, project_id, data.epoch)
    return await _placement(request, project_id)


@get(BASE + "/jobs")
async def pending_jobs(request: Request[Any, Any, Any], project_id: uuid.UUID) -> PendingJobs:
    """Source, fenced: the project's unfinished follow-up jobs, to be re-created in the target."""
    require_router(request)
    await _require(request, project_id, "fenced")
    return await queries.pending_jobs(ctx(request).pool, project_id)


@post(BASE + "/activate", status_code=200)
async def activate(request: Request[Any, Any, Any], project_id: uuid.UUID, data: ActivateIn) -> Placement:
    """Target: serve the project from now on."""
    require_router(request)
    await states.activate(ctx(request).pool, project_id, ctx(request).settings.region, data)
    return await _placement(request, project_id)


@post(BASE + "/release", status_code=200)
async def release(request: Request[Any, Any, Any], project_id: uuid.UUID, data: ReleaseIn) -> Placement:
    """Source, after the flip: answer 421 with the new region from now on."""
    require_router(request)
    if data.region not in ctx(request).settings.regions or data.region == ctx(request).settings.region:
        raise Problem(422, "not another known region")
    await states.release(ctx(request).pool, project_id, data)
    return await _placement(request, project_id)


@post(BASE + "/purge", status_code=200)
async def purge(request: Request[Any, Any, Any], project_id: uuid.UUID, data: PurgeIn) -> Receipt:
    """Source, released: delete every row and object of the project; the signed deletion receipt."""
    require_router(request)
    c = ctx(request)
    return await states.purge(c.pool, c.store, c.settings, project_id, data)


@post(BASE + "/unfence", status_code=200)
async def unfence(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Placement:
    """Source, when a move is abandoned before its flip: writes are accepted again."""
    require_router(request)
    await states.unfence(ctx(request).pool, project_id)
    return await _placement(request, project_id)


@post(BASE + "/discard", status_code=200)
async def discard(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Placement:
    """Target, when a move is abandoned: remove the copy (never a project this cell serves)."""
    require_router(request)
    c = ctx(request)
    await states.discard(c.pool, c.store, project_id)
    return await _placement(request, project_id)


ROUTES = [state, plan, prepare, begin, export_rows, import_rows, read_changes, apply_changes, ack_changes, checksums,
          list_objects, object_content, put_object, delete_object, fence, pending_jobs, activate, release, purge,
          unfence, discard]
