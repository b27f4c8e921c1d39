"""Wire types of sessions, as the contract names them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from cell.users import EndUserIn

Environment = Literal["production", "staging", "development"]

MAX_APP_VERSION, MAX_USER_AGENT = 100, 2000


class SessionIn(msgspec.Struct, kw_only=True):
    """`POST /v1/ingest/sessions`: register a session, or count another page view of it."""

    id: uuid.UUID | None = None
    user: EndUserIn | None = None
    device: dict[str, Any] | None = None
    app_version: str | None = None
    environment: Environment | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.app_version is not None and not 1 <= len(self.app_version) <= MAX_APP_VERSION:
            raise ValueError(f"app_version is 1 to {MAX_APP_VERSION} characters - at `$.app_version`")
        if self.user_agent is not None and len(self.user_agent) > MAX_USER_AGENT:
            raise ValueError(f"user_agent is at most {MAX_USER_AGENT} characters - at `$.user_agent`")


class Session(msgspec.Struct, kw_only=True):
    """A session as ingest and the management API return it."""

    id: uuid.UUID
    user_id: uuid.UUID | None
    started_at: datetime
    last_seen_at: datetime
    device: dict[str, Any]
    app_version: str | None
    environment: Environment | None
    user_agent: str | None
    page_views: int
    interaction_count: int


class SessionDetail(Session, kw_only=True):
    """A session for project members: also the keyed hash of the client IP (never the IP)."""

    project_id: uuid.UUID
    ip_hash: str | None
    privacy_scope: dict[str, Any] | None = None
    """What the privacy rules redacted from the user agent and device (rule, counts); never the values."""
