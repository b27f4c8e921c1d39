"""Webhook endpoints: register destinations for project events, rotate secrets, queue a test delivery.

Reads are open to viewers (the secret is never shown after creation); changes
need admin, like integrations, since a webhook sends project data out of the
cell. Destinations pass the SSRF guard (`cell.netguard`) when set, as a 422 on
`/url`; the delivery worker checks again before every delivery.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar import Request, Response, delete, get, patch, post

from cell import audit, netguard
from cell.auth import ADMIN, READ, require
from cell.context import caller, ctx
from cell.paging import Page, decode_cursor, limit_of, newest_first
from cell.settings import CellSettings
from cell.webhooks import queries
from cell.webhooks.types import TEST_EVENT, Delivery, Webhook, WebhookIn, WebhookPatch
from common.problems import FieldError, Problem

_ONE = "/v1/projects/{project_id:uuid}/webhooks/{webhook_id:uuid}"


async def _vet(url: str, settings: CellSettings) -> None:
    try:
        await netguard.check_url(url, netguard.Policy.of(settings))
    except netguard.Refused as exc:
        raise Problem(422, "destination refused", errors=[FieldError("/url", str(exc))]) from exc


def _host(url: str) -> str | None:
    """What the audit log keeps of a destination: its host, never a path or query that may hold a token."""
    return urlsplit(url).hostname


@post("/v1/projects/{project_id:uuid}/webhooks", status_code=201)
async def create_webhook(request: Request[Any, Any, Any], project_id: uuid.UUID, data: WebhookIn) -> Webhook:
    """Register a destination; the `whsec_` signing secret is in this response and never again."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    context = ctx(request)
    await _vet(data.url, context.settings)
    async with context.pool.acquire() as conn, conn.transaction():
        made = await queries.insert(conn, context.settings, project_id, data.url, list(data.events), data.enabled)
        if made is None:
            raise Problem(409, f"a project has at most {queries.MAX_WEBHOOKS} webhooks")
        row, secret = made
        await audit.record(conn, principal, "webhook.created", "webhook", row["id"],
                           {"host": _host(data.url), "events": row["events"], "enabled": row["enabled"]})
    out = msgspec.convert(dict(row), Webhook)
    out.secret = secret
    return out


@get("/v1/projects/{project_id:uuid}/webhooks")
async def list_webhooks(request: Request[Any, Any, Any], project_id: uuid.UUID, cursor: str | None = None,
                        limit: int | None = None) -> Page[Webhook]:
    """The project's webhooks, newest first, without secrets."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    rows = await queries.page(ctx(request).pool, project_id, decode_cursor(cursor) if cursor else None, size)
    return newest_first([msgspec.convert(dict(r), Webhook) for r in rows], size)


@get(_ONE)
async def get_webhook(request: Request[Any, Any, Any], project_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
    """One webhook, without its secret."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get(ctx(request).pool, project_id, webhook_id)
    if row is None:
        raise Problem(404, "no such webhook")
    return msgspec.convert(dict(row), Webhook)


@patch(_ONE)
async def update_webhook(request: Request[Any, Any, Any], project_id: uuid.UUID, webhook_id: uuid.UUID,
                         data: WebhookPatch) -> Webhook:
    """Change the URL (guarded again), the events or `enabled`; the secret stays."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    if not changes:
        raise Problem(422, "nothing to change: send url, events or enabled")
    context = ctx(request)
    if "url" in changes:
        await _vet(changes["url"], context.settings)
    async with context.pool.acquire() as conn, conn.transaction():
        row = await queries.update(conn, project_id, webhook_id, changes)
        if row is None:
            raise Problem(404, "no such webhook")
        meta: dict[str, Any] = {"fields": sorted(changes)}
        if "url" in changes:
            meta["host"] = _host(changes["url"])
        await audit.record(conn, principal, "webhook.updated", "webhook", webhook_id, meta)
    return msgspec.convert(dict(row), Webhook)


@delete(_ONE, status_code=204)
async def delete_webhook(request: Request[Any, Any, Any], project_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    """Remove a webhook; its pending deliveries go with it."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if not await queries.remove(conn, project_id, webhook_id):
            raise Problem(404, "no such webhook")
        await audit.record(conn, principal, "webhook.deleted", "webhook", webhook_id)


@post(_ONE + "/rotate-secret", status_code=200)
async def rotate_secret(request: Request[Any, Any, Any], project_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
    """Issue a new signing secret (shown once); the old one stops signing at once."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        made = await queries.rotate(conn, context.settings, project_id, webhook_id)
        if made is None:
            raise Problem(404, "no such webhook")
        row, secret = made
        await audit.record(conn, principal, "webhook.secret_rotated", "webhook", webhook_id)
    out = msgspec.convert(dict(row), Webhook)
    out.secret = secret
    return out


@post(_ONE + "/test", status_code=202)
async def test_webhook(request: Request[Any, Any, Any], project_id: uuid.UUID,
                       webhook_id: uuid.UUID) -> Response[Delivery]:
    """Queue a `webhook.test` delivery; the delivery worker sends it, signed, like any event."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if await queries.get(conn, project_id, webhook_id) is None:
            raise Problem(404, "no such webhook")
        payload = {"type": TEST_EVENT, "timestamp": datetime.now(UTC).isoformat(),
                   "data": {"webhook_id": str(webhook_id), "project_id": str(project_id)}}
        row = await queries.add_delivery(conn, project_id, webhook_id, TEST_EVENT, payload)
        await audit.record(conn, principal, "webhook.tested", "webhook", webhook_id, {"delivery_id": str(row["id"])})
    return Response(msgspec.convert(dict(row), Delivery), status_code=202)


@get(_ONE + "/deliveries")
async def list_deliveries(request: Request[Any, Any, Any], project_id: uuid.UUID, webhook_id: uuid.UUID,
                          cursor: str | None = None, limit: int | None = None) -> Page[Delivery]:
    """A webhook's deliveries, newest first: status, attempts and the last response code or error."""
    require(await caller(request, project_id), project_id, level=READ)
    pool = ctx(request).pool
    if await queries.get(pool, project_id, webhook_id) is None:
        raise Problem(404, "no such webhook")
    size = limit_of(limit)
    rows = await queries.deliveries(pool, project_id, webhook_id, decode_cursor(cursor) if cursor else None, size)
    return newest_first([msgspec.convert(dict(r), Delivery) for r in rows], size)


ROUTES = [create_webhook, list_webhooks, get_webhook, update_webhook, delete_webhook, rotate_secret, test_webhook,
          list_deliveries]
