"""Wire types of webhooks and their deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from cell import netguard

Event = Literal["interaction.created", "interaction.updated", "vote.created", "message.created"]
EVENTS: tuple[str, ...] = ("interaction.created", "interaction.updated", "vote.created", "message.created")
TEST_EVENT = "webhook.test"
DeliveryStatus = Literal["pending", "delivered", "failed"]


def _check_url(url: str) -> None:
    try:
        netguard.parse_url(url)
    except netguard.Refused as exc:
        raise ValueError(f"{exc} - at `$.url`") from exc


def _check_events(events: list[Event]) -> None:
    if not events:
        raise ValueError("subscribe to at least one event - at `$.events`")


class WebhookIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST …/webhooks`."""

    url: str
    events: list[Event]
    enabled: bool = True

    def __post_init__(self) -> None:
        _check_url(self.url)
        _check_events(self.events)
        self.events = sorted(set(self.events))


class WebhookPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PATCH …/webhooks/{id}`: absent fields are left alone."""

    url: str | msgspec.UnsetType = msgspec.UNSET
    events: list[Event] | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if not isinstance(self.url, msgspec.UnsetType):
            _check_url(self.url)
        if not isinstance(self.events, msgspec.UnsetType):
            _check_events(self.events)
            self.events = sorted(set(self.events))


class Webhook(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A webhook as the API shows it; `secret` only in the responses that create or rotate it."""

    id: uuid.UUID
    url: str
    events: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    secret: str | None = None


class Delivery(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One delivery of an event to a webhook, as the delivery worker tracks it; `payload` when queued."""

    id: uuid.UUID
    webhook_id: uuid.UUID
    event: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] | None = None
