"""End users: the people using a customer's app, upserted on (project, external id)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec

from common.ids import uuid7


class EndUserIn(msgspec.Struct, forbid_unknown_fields=False):
    """`user` as SDKs send it with any ingest call."""

    external_id: str
    email: str | None = None
    name: str | None = None
    avatar_url: str | None = None
    traits: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.external_id) <= 255:
            raise ValueError("external_id must be 1 to 255 characters")
        if self.email is not None and len(self.email) > 255:
            raise ValueError("email is longer than 255 characters")
        if self.name is not None and len(self.name) > 255:
            raise ValueError("name is longer than 255 characters")


async def upsert(conn: asyncpg.Connection, project_id: uuid.UUID, user: EndUserIn) -> uuid.UUID:
    """The end user's id, creating or refreshing the row; fields not sent are kept."""
    row_id: uuid.UUID = await conn.fetchval(
        """INSERT INTO end_users (id, project_id, external_user_id, email, name, avatar_url, traits)
           VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, '{}'::jsonb))
           ON CONFLICT (project_id, external_user_id) DO UPDATE SET
               email = coalesce(EXCLUDED.email, end_users.email),
               name = coalesce(EXCLUDED.name, end_users.name),
               avatar_url = coalesce(EXCLUDED.avatar_url, end_users.avatar_url),
               traits = end_users.traits || coalesce($7, '{}'::jsonb),
               updated_at = now()
           RETURNING id""",
        uuid7(), project_id, user.external_id, user.email, user.name, user.avatar_url, user.traits,
    )
    return row_id
