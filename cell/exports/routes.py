"""Project export endpoints (owner only): ask for an export, follow it, download its archive and manifest.

- `POST /v1/projects/{id}/export` (also `POST …/exports`) → 202 with the export (`status: pending`) and
  a `Location` header naming it; a worker builds it (`pending → running → ready | failed`).
- `GET …/exports` lists them, newest first; `GET …/exports/{export_id}` is one, with `links` to
- `GET …/exports/{export_id}/content`: the zip (rows as JSON lines, objects as stored, `manifest.json`), and
- `GET …/exports/{export_id}/manifest`: the signed manifest alone, to check the archive against.

An export holds every end user's data, so only the project's owners may ask for or read one; each
request and each download is in the audit log (ids and sizes only).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, get, post
from litestar.response import Stream

from cell import audit
from cell.auth import OWNER, Principal, require
from cell.context import caller, ctx
from cell.exports import queries
from cell.exports.jobs import REQUESTED
from cell.exports.manifest import SignedManifest
from cell.exports.types import ExportLinks, ProjectExport
from cell.outbox import add as enqueue
from cell.paging import Page, decode_cursor, limit_of, newest_first
from common.ids import uuid7
from common.problems import Problem


def _export(row: asyncpg.Record) -> ProjectExport:
    base = f"/v1/projects/{row['project_id']}/exports/{row['id']}"
    ready = row["status"] == "ready"
    links = ExportLinks(self=base, content=f"{base}/content" if ready else None,
                        manifest=f"{base}/manifest" if ready else None)
    fields = {k: v for k, v in dict(row).items() if k not in ("storage_key", "manifest_storage_key")}
    return msgspec.convert({**fields, "links": msgspec.to_builtins(links)}, ProjectExport)


@post(["/v1/projects/{project_id:uuid}/export", "/v1/projects/{project_id:uuid}/exports"], status_code=202)
async def request_export(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Response[ProjectExport]:
    """Ask for the whole project as one zip in its region's object store (owner); built by a worker."""
    principal = require(await caller(request, project_id), project_id, level=OWNER)
    export_id = uuid7()
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.insert(conn, export_id, project_id, principal.actor_id)
        await enqueue(conn, project_id, REQUESTED, {"export_id": str(export_id)})
        await audit.record(conn, principal, "project.export_requested", "project_export", export_id, {})
    out = _export(row)
    return Response(out, status_code=202, headers={"Location": out.links.self})


@get("/v1/projects/{project_id:uuid}/exports")
async def list_exports(request: Request[Any, Any, Any], project_id: uuid.UUID, cursor: str | None = None,
                       limit: int | None = None) -> Page[ProjectExport]:
    """The project's exports, newest first (owner)."""
    require(await caller(request, project_id), project_id, level=OWNER)
    size = limit_of(limit)
    rows = await queries.page(ctx(request).pool, project_id, decode_cursor(cursor) if cursor else None, size)
    return newest_first([_export(r) for r in rows], size)


@get("/v1/projects/{project_id:uuid}/exports/{export_id:uuid}")
async def get_export(request: Request[Any, Any, Any], project_id: uuid.UUID, export_id: uuid.UUID) -> ProjectExport:
    """One export: its status, and once ready its size, digests, signature and links (owner)."""
    _, row = await _owned(request, project_id, export_id)
    return _export(row)


async def _owned(request: Request[Any, Any, Any], project_id: uuid.UUID,
                 export_id: uuid.UUID) -> tuple[Principal, asyncpg.Record]:
    """The caller (an owner of the project) and the project's export: 404 for an id that is not the
    project's, whoever asks, then 403 for anyone but an owner."""
    principal = require(await caller(request, project_id), project_id)
    row = await queries.get(ctx(request).pool, project_id, export_id)
    if row is None:
        raise Problem(404, "no such export")
    return require(principal, level=OWNER), row


async def _ready(request: Request[Any, Any, Any], project_id: uuid.UUID, export_id: uuid.UUID,
                 column: str) -> tuple[asyncpg.Record, str]:
    """The ready export and one of its object keys; 404 when absent, 409 while not ready."""
    principal, row = await _owned(request, project_id, export_id)
    pool = ctx(request).pool
    if row["status"] != "ready":
        raise Problem(409, f"the export is {row['status']}: " + (
            row["failure_reason"] or "its archive is being built; follow the export until it is ready"))
    if column == "storage_key":
        async with pool.acquire() as conn, conn.transaction():
            await audit.record(conn, principal, "project.export_downloaded", "project_export", export_id,
                               {"size_bytes": row["size_bytes"]})
    return row, str(row[column])


@get("/v1/projects/{project_id:uuid}/exports/{export_id:uuid}/content", media_type="application/zip")
async def export_content(request: Request[Any, Any, Any], project_id: uuid.UUID, export_id: uuid.UUID) -> Stream:
    """The archive, streamed from the region's object store (owner)."""
    row, key = await _ready(request, project_id, export_id, "storage_key")
    chunks = ctx(request).store.stream(key)
    first = await anext(chunks, b"")  # a missing object is a 404 now, not a broken stream later

    async def content() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for piece in chunks:
            yield piece

    return Stream(content(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="project-{project_id}-{export_id}.zip"',
        "Content-Length": str(row["size_bytes"]),
        "Cache-Control": "no-store",
    })


@get("/v1/projects/{project_id:uuid}/exports/{export_id:uuid}/manifest")
async def export_manifest(request: Request[Any, Any, Any], project_id: uuid.UUID,
                          export_id: uuid.UUID) -> SignedManifest:
    """The signed manifest: every file of the archive with its size and SHA-256 (owner)."""
    _, key = await _ready(request, project_id, export_id, "manifest_storage_key")
    return msgspec.json.decode(await ctx(request).store.get(key), type=SignedManifest)


ROUTES = [request_export, list_exports, get_export, export_content, export_manifest]
