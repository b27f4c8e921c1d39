"""Worker jobs of outbound webhooks: each project event fanned out to its subscribed webhooks, then delivered.

One consumer per event kind (`webhooks.interaction.created` …) builds the
Standard Webhooks envelope `{type, timestamp, data}` from the rows as they are
now (`data` is the object in its API shape), queues one delivery per subscribed
webhook — keyed by the outbox event, so a retried job queues nothing twice —
and makes the first attempt at once. A cron every 5 seconds sends what is due
after that: retries, test deliveries, and rows a dead worker left behind.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from cell.chat.types import Message
from cell.feedback.types import VoteReceipt
from cell.interactions.queries import COLUMNS as INTERACTION_COLUMNS
from cell.interactions.types import Interaction
from cell.jobs import Cron, Handler, Job
from cell.webhooks import delivery
from cell.webhooks.queries import MAX_WEBHOOKS, fan_out
from cell.webhooks.types import EVENTS

_OUTBOX_KEY = re.compile(r"^outbox:(\d+):")


@dataclass(frozen=True, slots=True)
class Event:
    """A project event ready to fan out: the envelope, and the person whose data it carries (for erasure)."""

    project_id: uuid.UUID
    envelope: dict[str, Any]
    end_user_id: uuid.UUID | None


def _envelope(kind: str, when: datetime, data: msgspec.Struct, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(data)
    return {"type": kind, "timestamp": when.isoformat(), "data": body | extra}


async def build_event(pool: asyncpg.Pool, kind: str, payload: dict[str, Any]) -> Event | None:
    """The event an outbox row stands for, read now; None when its subject is gone (deleted or erased)."""
    if kind in ("interaction.created", "interaction.updated"):
        row = await pool.fetchrow(f"SELECT {INTERACTION_COLUMNS} FROM interactions WHERE id = $1",
                                  uuid.UUID(payload["interaction_id"]))
        if row is None:
            return None
        interaction = msgspec.convert(dict(row), Interaction)
        if kind == "interaction.created":
            envelope = _envelope(kind, interaction.created_at, interaction)
        else:
            envelope = _envelope(kind, interaction.updated_at, interaction,
                                 changed_fields=list(payload.get("fields") or []))
        return Event(interaction.project_id, envelope, interaction.user_id)
    if kind == "vote.created":
        row = await pool.fetchrow(
            """SELECT v.id, v.project_id, v.feedback_item_id, v.session_id, v.user_id, v.created_at, f.vote_count
                 FROM feedback_votes v
                 JOIN feedback_items f ON f.project_id = v.project_id AND f.id = v.feedback_item_id
                WHERE v.id = $1""", uuid.UUID(payload["vote_id"]))
        if row is None:
            return None
        vote = msgspec.convert(dict(row), VoteReceipt)
        return Event(row["project_id"], _envelope(kind, vote.created_at, vote), vote.user_id)
    if kind == "message.created":
        row = await pool.fetchrow(
            """SELECT m.id, m.project_id, m.conversation_id, m.direction, m.body, m.author_id, m.created_at,
                      m.read_at, c.user_id
                 FROM messages m JOIN conversations c ON c.project_id = m.project_id AND c.id = m.conversation_id
                WHERE m.id = $1""", uuid.UUID(payload["message_id"]))
        if row is None:
            return None
        message = msgspec.convert(dict(row), Message)
        return Event(row["project_id"], _envelope(kind, message.created_at, message), row["user_id"])
    raise ValueError(f"not a webhook event: {kind}")


def event_key(ctx: dict[str, Any], kind: str, payload: dict[str, Any]) -> str:
    """The identity of the outbox event this job runs for: `outbox:<row id>`, read from the job's key.

    Outside the relay (a job run by hand) the payload stands in for it.
    """
    match = _OUTBOX_KEY.match(str(getattr(ctx.get("job"), "key", "") or ""))
    if match:
        return f"outbox:{match.group(1)}"
    digest = hashlib.sha256(kind.encode() + b"|" + msgspec.json.encode(payload, order="sorted")).hexdigest()
    return f"payload:{digest[:32]}"


async def publish(ctx: dict[str, Any], kind: str, payload: dict[str, Any]) -> int:
    """Fan one event out to the subscribed webhooks and make the first attempts; how many deliveries were queued."""
    pool: asyncpg.Pool = ctx["pool"]
    event = await build_event(pool, kind, payload)
    if event is None:
        return 0
    key = event_key(ctx, kind, payload)
    async with pool.acquire() as conn, conn.transaction():
        queued = await fan_out(conn, event.project_id, kind, event.envelope, key=key, end_user_id=event.end_user_id)
    # Also picks up this event's rows a previous run queued but did not get to send.
    await delivery.deliver_all(ctx, await delivery.claim(pool, event_key=key, limit=MAX_WEBHOOKS))
    return queued


def _consumer(kind: str) -> Handler:
    async def handler(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        await publish(ctx, kind, payload)

    handler.__doc__ = f"Deliver `{kind}` to the project's webhooks subscribed to it."
    return handler


JOBS = [Job(kind, _consumer(kind), timeout=60, retries=5, name=f"webhooks.{kind}") for kind in EVENTS]
CRONS = [
    Cron("webhooks.deliver_due", delivery.deliver_due_webhooks, cron="* * * * * */5", timeout=120),
    Cron("webhooks.prune", delivery.prune_webhook_deliveries, cron="23 3 * * *", timeout=300),
]
