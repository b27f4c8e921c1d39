"""SQL for webhooks and deliveries, and what the delivery worker needs: fan-out, secrets, the URL re-check."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from cell import netguard, secrets
from cell.settings import CellSettings
from common.ids import uuid7

COLUMNS = "id, url, events, enabled, created_at, updated_at"
DELIVERY_COLUMNS = """id, webhook_id, event, status, attempts, next_attempt_at, last_status_code, last_error,
    created_at, delivered_at"""
MAX_WEBHOOKS = 20
"""Per project: each event fans out to every subscribed webhook, so the fan-out stays bounded."""


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def purpose(webhook_id: uuid.UUID) -> str:
    """Associated data of a webhook's sealed secret: it opens for this webhook only."""
    return f"webhook:{webhook_id}:secret"


async def insert(conn: asyncpg.Connection, settings: CellSettings, project_id: uuid.UUID, url: str,
                 events: list[str], enabled: bool) -> tuple[asyncpg.Record, str] | None:
    """Create a webhook with a new secret: the row and the secret, or None at the project's limit.

    Creations in one project take turns on an advisory lock so concurrent requests cannot overshoot the limit.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('webhooks:' || $1::uuid::text, 0))", project_id)
    count = await conn.fetchval("SELECT count(*) FROM webhooks WHERE project_id = $1", project_id)
    if count >= MAX_WEBHOOKS:
        return None
    webhook_id, secret = uuid7(), new_secret()
    row = await conn.fetchrow(
        f"""INSERT INTO webhooks (id, project_id, url, events, secret, enabled) VALUES ($1, $2, $3, $4, $5, $6)
            RETURNING {COLUMNS}""",
        webhook_id, project_id, url, events, secrets.seal(settings.secret_key, project_id, purpose(webhook_id), secret),
        enabled)
    assert row is not None
    return row, secret


async def get(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
              webhook_id: uuid.UUID) -> asyncpg.Record | None:
    """One webhook of the project, without its secret."""
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM webhooks WHERE project_id = $1 AND id = $2",
                               project_id, webhook_id)


async def page(pool: asyncpg.Pool, project_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None,
               limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 webhooks, newest first, after the cursor position."""
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {COLUMNS} FROM webhooks WHERE project_id = $1
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
             ORDER BY created_at DESC, id DESC LIMIT $4""",
        project_id, after[0] if after else None, after[1] if after else None, limit + 1)
    return rows


async def update(conn: asyncpg.Connection, project_id: uuid.UUID, webhook_id: uuid.UUID,
                 changes: dict[str, Any]) -> asyncpg.Record | None:
    """Apply `changes` (url, events, enabled) to a webhook of the project."""
    sets = "".join(f"{name} = ${i}, " for i, name in enumerate(changes, start=3))
    return await conn.fetchrow(
        f"UPDATE webhooks SET {sets}updated_at = now() WHERE project_id = $1 AND id = $2 RETURNING {COLUMNS}",
        project_id, webhook_id, *changes.values())


async def rotate(conn: asyncpg.Connection, settings: CellSettings, project_id: uuid.UUID,
                 webhook_id: uuid.UUID) -> tuple[asyncpg.Record, str] | None:
    """Replace a webhook's secret: the row and the new secret, or None when there is no such webhook."""
    secret = new_secret()
    row = await conn.fetchrow(
        f"""UPDATE webhooks SET secret = $3, updated_at = now() WHERE project_id = $1 AND id = $2
            RETURNING {COLUMNS}""",
        project_id, webhook_id, secrets.seal(settings.secret_key, project_id, purpose(webhook_id), secret))
    return None if row is None else (row, secret)


async def remove(conn: asyncpg.Connection, project_id: uuid.UUID, webhook_id: uuid.UUID) -> bool:
    """Delete a webhook and its delivery history."""
    found = await conn.fetchval("DELETE FROM webhooks WHERE project_id = $1 AND id = $2 RETURNING true",
                                project_id, webhook_id)
    return bool(found)


async def add_delivery(conn: asyncpg.Connection, project_id: uuid.UUID, webhook_id: uuid.UUID, event: str,
                       payload: dict[str, Any]) -> asyncpg.Record:
    """Queue one delivery (pending, due now) for the delivery worker."""
    row = await conn.fetchrow(
        f"""INSERT INTO webhook_deliveries (id, project_id, webhook_id, event, payload) VALUES ($1, $2, $3, $4, $5)
            RETURNING {DELIVERY_COLUMNS}, payload""", uuid7(), project_id, webhook_id, event, payload)
    assert row is not None
    return row


async def fan_out(conn: asyncpg.Connection, project_id: uuid.UUID, event: str, payload: dict[str, Any], *,
                  key: str | None = None, end_user_id: uuid.UUID | None = None) -> int:
    """Queue a delivery of `event` to every enabled webhook of the project subscribed to it; how many were queued.

    `key` names the event (e.g. its outbox row): fanning the same event out again, as a retried job does, queues
    nothing twice for a webhook. `end_user_id` is the person whose data the payload carries, so erasing them
    removes these copies too.
    """
    rows = await conn.fetch(
        f"""SELECT id FROM webhooks WHERE project_id = $1 AND enabled AND $2 = ANY(events)
             ORDER BY id LIMIT {MAX_WEBHOOKS}""", project_id, event)
    queued = 0
    for row in rows:
        made = await conn.fetchval(
            """INSERT INTO webhook_deliveries (id, project_id, webhook_id, event, payload, event_key, end_user_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (webhook_id, event_key) WHERE event_key IS NOT NULL DO NOTHING RETURNING true""",
            uuid7(), project_id, row["id"], event, payload, key, end_user_id)
        queued += bool(made)
    return queued


async def deliveries(pool: asyncpg.Pool, project_id: uuid.UUID, webhook_id: uuid.UUID,
                     after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 deliveries of one webhook, newest first, after the cursor position."""
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE project_id = $1 AND webhook_id = $2
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
             ORDER BY created_at DESC, id DESC LIMIT $5""",
        project_id, webhook_id, after[0] if after else None, after[1] if after else None, limit + 1)
    return rows


async def signing_secret(conn: asyncpg.Connection | asyncpg.Pool, settings: CellSettings, project_id: uuid.UUID,
                         webhook_id: uuid.UUID) -> str | None:
    """The webhook's `whsec_` secret in plain text, for signing a delivery; None if the webhook is gone.

    Raises `cell.secrets.SecretError` when it does not open (the cell key changed).
    """
    sealed = await conn.fetchval("SELECT secret FROM webhooks WHERE project_id = $1 AND id = $2",
                                 project_id, webhook_id)
    return None if sealed is None else secrets.unseal(settings.secret_key, project_id, purpose(webhook_id), sealed)


async def check_destination(settings: CellSettings, url: str) -> netguard.Destination:
    """The SSRF guard at delivery time: DNS may have changed since the webhook was created.

    Raises `cell.netguard.Refused`; a refused delivery should fail without retrying into the same address.
    Connect to one of the returned addresses and do not follow redirects.
    """
    return await netguard.check_url(url, netguard.Policy.of(settings))


async def reseal(pool: asyncpg.Pool, secret_key: str) -> int:
    """Seal every webhook's signing secret again with the key ring's newest key (`relay secrets rotate`)."""
    changed = 0
    for row in await pool.fetch("SELECT id, project_id, secret FROM webhooks"):
        again = secrets.reseal(secret_key, row["project_id"], purpose(row["id"]), row["secret"])
        if again is not None:
            await pool.execute("UPDATE webhooks SET secret = $2 WHERE id = $1 AND secret = $3",
                               row["id"], again, row["secret"])
            changed += 1
    return changed
