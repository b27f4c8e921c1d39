"""An audit entry as the API shows it, whichever plane recorded it: a cell (its writes) or the router (its own)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

ActorType = Literal["user", "admin", "system", "api", "anonymous"]
"""Who acted: an end user, a dashboard account (`actor_id` its user id), the service itself, an API key
(`actor_id` its prefix), or nobody known (a failed sign-in, at the router only)."""


class AuditEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One audit log entry; `ip_address` was truncated (/24, /48) before it was stored."""

    id: uuid.UUID
    actor_type: ActorType
    actor_id: str | None
    action: str
    target_type: str | None
    target_id: str | None
    meta: dict[str, Any]
    ip_address: str | None
    created_at: datetime
    source: str | None = None
    """Which log holds it, in a list merged from both planes: `router`, or the cell's region."""
