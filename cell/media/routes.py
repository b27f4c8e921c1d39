"""Media endpoints: raw-body uploads from SDKs into the cell's object store, and their management.

An upload is checked before a byte is kept (the interaction is the key's
project's, the declared type is allowed for the kind, the first bytes are that
type), streamed into the store with the size limit enforced as it flows, and
recorded as a row only once the bytes are stored; any failure on the way
leaves neither bytes nor row. Images are held whole in memory instead of
streamed, because their metadata is removed before they are stored; so are
uploads that name their own id, whose digest tells a retry from a conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import ResponseSpec
from litestar.response import Stream

from cell import audit
from cell.auth import READ, WRITE, require
from cell.context import caller, ctx
from cell.media import metadata, queries, sniff
from cell.media.types import Media
from cell.paging import Page, decode_cursor, limit_of, newest_first
from cell.storage import TooLarge, project_key
from common.ids import uuid7
from common.problems import FieldError, Problem

MiB = 1024 * 1024
MAX_MEDIA_BYTES = 25 * MiB


async def _head(body: AsyncIterator[bytes]) -> bytes:
    """The first `SNIFF_BYTES` or more of the body (less only when the body is shorter)."""
    head = b""
    while len(head) < sniff.SNIFF_BYTES:
        piece = await anext(body, None)
        if piece is None:
            break
        head += piece
    return head


async def _rest(head: bytes, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The whole body again: the sniffed head, then what is still to come."""
    if head:
        yield head
    async for piece in body:
        if piece:
            yield piece


async def _whole(chunks: AsyncIterator[bytes]) -> bytes:
    """A body read into memory, at most MAX_MEDIA_BYTES of it (TooLarge past that)."""
    data = bytearray()
    async for piece in chunks:
        data += piece
        if len(data) > MAX_MEDIA_BYTES:
            raise TooLarge
    return bytes(data)


def _same_upload(row: asyncpg.Record, interaction_id: uuid.UUID, kind: str, content_type: str,
                 received: str) -> bool:
    """Whether a stored media row is this upload again: same interaction, kind, type and bytes as sent."""
    meta: dict[str, Any] = row["meta"] or {}
    sent = meta.get("received_sha256") or row["sha256"]
    return bool(row["interaction_id"] == interaction_id and row["kind"] == kind
                and row["content_type"] == content_type and sent == received)


async def _retried(pool: asyncpg.Pool, pid: uuid.UUID, media_id: uuid.UUID, interaction_id: uuid.UUID,
                   kind: str, content_type: str, received: str) -> Response[Media]:
    """The answer to an upload whose id is taken: the stored media (200) when it is this upload again,
    else a 409 (another body, interaction or kind under this id, or an id of another project's)."""
    row = await queries.get(pool, pid, media_id)
    if row is None or not _same_upload(row, interaction_id, kind, content_type, received):
        raise Problem(409, "this media id is already used for another upload")
    return Response(msgspec.convert(dict(row), Media), status_code=200)


@post("/v1/ingest/interactions/{interaction_id:uuid}/media", status_code=201,
      request_max_body_size=MAX_MEDIA_BYTES,
      responses={200: ResponseSpec(data_container=Media, description="A retried upload: the media stored first.")})
async def upload_media(request: Request[Any, Any, Any], interaction_id: uuid.UUID,
                       kind: sniff.UploadKind | None = None,
                       id: uuid.UUID | None = None) -> Response[Media]:
    """Store a screenshot, video or attachment of an interaction; 413/415 keep nothing.

    Images lose their embedded metadata first (cell/media/metadata.py) unless the project's settings
    say `strip_image_metadata: false`. A client may name the media with `?id=`: the same upload sent
    again stores nothing and answers 200 with the stored media; another body under that id is a 409.
    """
    principal = require(await caller(request), ingest=True)
    client_id = id  # the query parameter's public name is `id`, as for other client ids
    if kind is None:
        raise Problem(422, "say what this is with ?kind=screenshot|video|attachment",
                      errors=[FieldError("/kind", "missing required query parameter")])
    pid = principal.project_id
    c = ctx(request)
    if not await queries.interaction_exists(c.pool, pid, interaction_id):
        raise Problem(404, "no such interaction")
    content_type = sniff.declared_type(request.headers.get("content-type"))
    if not sniff.allowed(kind, content_type):
        types = ", ".join(sorted(sniff.ALLOWED[kind]))
        raise Problem(415, f"a {kind} must be one of: {types}")
    assert content_type is not None
    body = aiter(request.stream())
    head = await _head(body)
    if not head:
        raise Problem(400, "the body is empty")
    if not sniff.matches(content_type, head):
        raise Problem(415, f"the bytes are not {content_type}")

    too_large = Problem(413, f"media is limited to {MAX_MEDIA_BYTES} bytes")
    image = content_type in metadata.FORMATS and await queries.strips_metadata(c.pool, pid)
    data: bytes | None = None
    if image or client_id is not None:  # the bytes as sent are needed whole, or at least their digest
        try:
            data = await _whole(_rest(head, body))
        except (TooLarge, RequestEntityTooLarge):
            raise too_large from None
    received = hashlib.sha256(data).hexdigest() if data is not None else None
    if client_id is not None and await queries.get(c.pool, pid, client_id) is not None:
        assert received is not None
        return await _retried(c.pool, pid, client_id, interaction_id, kind, content_type, received)
    removed: tuple[str, ...] = ()
    if image:
        assert data is not None
        try:
            cleaned = await asyncio.to_thread(metadata.clean, data, content_type)
        except metadata.TooManyPixels:
            raise Problem(413, f"images are limited to {metadata.MAX_PIXELS} pixels") from None
        except metadata.Unreadable as exc:
            raise Problem(415, str(exc)) from None
        data, removed = cleaned.data, cleaned.removed

    media_id = client_id or uuid7()
    # A client's id may be retried concurrently: each attempt writes its own object, the row decides.
    key = (project_key(pid, "media", str(media_id)) if client_id is None
           else project_key(pid, "media", str(media_id), str(uuid7())))
    try:
        if data is not None:
            stored = await c.store.put(key, data)
        else:
            stored = await c.store.put_stream(key, _rest(head, body), MAX_MEDIA_BYTES)
    except (TooLarge, RequestEntityTooLarge):
        await c.store.delete(key)
        raise too_large from None
    except BaseException:  # the caller went away mid-upload, or the store failed: keep no partial object
        await c.store.delete(key)
        raise
    meta: dict[str, Any] = {}
    if removed:
        meta["metadata_removed"] = list(removed)
    if received is not None and received != stored.sha256:
        meta["received_sha256"] = received
    try:
        row = await queries.insert(c.pool, media_id, pid, interaction_id, kind, content_type, stored, meta)
    except asyncpg.ForeignKeyViolationError:
        await c.store.delete(key)
        raise Problem(404, "no such interaction") from None
    except asyncpg.UniqueViolationError:  # the same id stored meanwhile (a concurrent retry), or another's
        await c.store.delete(key)
        return await _retried(c.pool, pid, media_id, interaction_id, kind, content_type, received or stored.sha256)
    except BaseException:
        await c.store.delete(key)
        raise
    return Response(msgspec.convert(dict(row), Media), status_code=201)


@get("/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/media")
async def list_media(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID,
                     cursor: str | None = None, limit: int | None = None) -> Page[Media]:
    """An interaction's media, newest first."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    pool = ctx(request).pool
    if not await queries.interaction_exists(pool, project_id, interaction_id):
        raise Problem(404, "no such interaction")
    rows = await queries.page(pool, project_id, interaction_id, decode_cursor(cursor) if cursor else None, size)
    return newest_first([msgspec.convert(dict(r), Media) for r in rows], size)


@get("/v1/projects/{project_id:uuid}/media/{media_id:uuid}")
async def get_media(request: Request[Any, Any, Any], project_id: uuid.UUID, media_id: uuid.UUID) -> Media:
    """One file's metadata."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get(ctx(request).pool, project_id, media_id)
    if row is None:
        raise Problem(404, "no such media")
    return msgspec.convert(dict(row), Media)


@get("/v1/projects/{project_id:uuid}/media/{media_id:uuid}/content")
async def media_content(request: Request[Any, Any, Any], project_id: uuid.UUID, media_id: uuid.UUID) -> Stream:
    """The stored bytes, streamed, typed as stored; never something a browser would sniff or run."""
    require(await caller(request, project_id), project_id, level=READ)
    c = ctx(request)
    row = await queries.get(c.pool, project_id, media_id)
    if row is None or row["storage_key"] is None:
        raise Problem(404, "no such media")
    content_type: str = row["content_type"] or "application/octet-stream"
    chunks = c.store.stream(row["storage_key"])
    first = await anext(chunks, b"")  # a missing object is a 404 now, not a broken stream later

    async def content() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for piece in chunks:
            yield piece

    disposition = "inline" if content_type in sniff.IMAGES else "attachment"
    filename = f"{media_id}{sniff.EXTENSIONS.get(content_type, '')}"
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'{disposition}; filename="{filename}"',
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=0",
    }
    if row["size_bytes"] is not None:
        headers["Content-Length"] = str(row["size_bytes"])
    return Stream(content(), media_type=content_type, headers=headers)


@delete("/v1/projects/{project_id:uuid}/media/{media_id:uuid}", status_code=204)
async def delete_media(request: Request[Any, Any, Any], project_id: uuid.UUID, media_id: uuid.UUID) -> None:
    """Remove a file's bytes and row; audited in the same transaction."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    c = ctx(request)
    async with c.pool.acquire() as conn, conn.transaction():
        row = await queries.delete(conn, project_id, media_id)
        if row is None:
            raise Problem(404, "no such media")
        await audit.record(conn, principal, "media.deleted", "media", media_id, {"kind": row["kind"]})
        # Bytes go before the commit: if the store fails, the row stays and the delete can be retried.
        if row["storage_key"] is not None:
            await c.store.delete(row["storage_key"])


ROUTES = [upload_media, list_media, get_media, media_content, delete_media]
