"""The msgspec types of the member and invitation endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from router.auth.routes import check_email

Role = Literal["owner", "admin", "agent", "viewer"]


class MemberIn(msgspec.Struct):
    """`POST /v1/projects/{id}/members`: invite this address with this role."""

    email: str
    role: Role

    def __post_init__(self) -> None:
        check_email(self.email)
        self.email = self.email.strip().lower()


class RoleIn(msgspec.Struct, forbid_unknown_fields=True):
    """`PATCH /v1/projects/{id}/members/{user_id}`."""

    role: Role


class Member(msgspec.Struct):
    """Someone with a role in the project."""

    user_id: uuid.UUID
    email: str
    name: str | None
    role: Role
    joined_at: datetime


class MemberList(msgspec.Struct):
    data: list[Member]
    next_cursor: str | None = None


class Invitation(msgspec.Struct, kw_only=True):
    """An invitation waiting for its person (the token went to their mailbox only; it is never shown here)."""

    id: uuid.UUID
    status: Literal["invited"] = "invited"
    email: str
    role: Role
    project_id: uuid.UUID
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime


class InvitationList(msgspec.Struct):
    data: list[Invitation]
    next_cursor: str | None = None


class Accepted(msgspec.Struct, kw_only=True):
    """`POST /v1/invitations/{token}/accept`: the project joined and the role held in it now."""

    project_id: uuid.UUID
    user_id: uuid.UUID
    role: Role
    joined_at: datetime
