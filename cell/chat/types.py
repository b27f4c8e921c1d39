"""Wire types of conversations and their messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from cell.users import EndUserIn

Source = Literal["widget", "sdk", "api"]
Status = Literal["open", "closed"]
Direction = Literal["inbound", "outbound"]
Sort = Literal["last_message_at", "created_at"]
MAX_BODY, MAX_SUBJECT = 20_000, 500


def check_body(body: str) -> None:
    """A message says something, within reason."""
    if not body.strip():
        raise ValueError("a message needs a body - at `$.body`")
    if len(body) > MAX_BODY:
        raise ValueError(f"a message is at most {MAX_BODY} characters - at `$.body`")


class ConversationIn(msgspec.Struct, kw_only=True):
    """`POST /v1/ingest/conversations`: a conversation and its first message."""

    session_id: uuid.UUID
    body: str
    user: EndUserIn | None = None
    subject: str | None = None
    id: uuid.UUID | None = None
    source: Source = "widget"

    def __post_init__(self) -> None:
        check_body(self.body)
        if self.subject is not None and len(self.subject) > MAX_SUBJECT:
            raise ValueError(f"a subject is at most {MAX_SUBJECT} characters - at `$.subject`")


class MessageIn(msgspec.Struct, kw_only=True):
    """`POST …/conversations/{id}/messages`, from the end user or an agent."""

    body: str
    id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        check_body(self.body)


class ConversationPatch(msgspec.Struct, kw_only=True):
    """`PATCH …/conversations/{id}`: absent fields are left alone, a null assignee unassigns."""

    status: Status | msgspec.UnsetType = msgspec.UNSET
    assignee_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET


class Conversation(msgspec.Struct, kw_only=True):
    """A conversation as the management API returns it."""

    id: uuid.UUID
    project_id: uuid.UUID
    user_id: uuid.UUID | None
    session_id: uuid.UUID | None
    status: Status
    subject: str | None
    assignee_id: uuid.UUID | None
    last_message_at: datetime | None
    message_count: int
    created_at: datetime
    updated_at: datetime


class ConversationStarted(msgspec.Struct, kw_only=True):
    """What the end user gets back: the id and the token that opens this conversation to them."""

    id: uuid.UUID
    token: str
    status: Status
    subject: str | None
    message_count: int
    last_message_at: datetime | None
    created_at: datetime


class Message(msgspec.Struct, kw_only=True):
    """A message as agents see it."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    direction: Direction
    body: str
    author_id: uuid.UUID | None
    created_at: datetime
    read_at: datetime | None


class EndUserMessage(msgspec.Struct, kw_only=True):
    """A message as the end user sees it: no agent account ids."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    direction: Direction
    body: str
    created_at: datetime
    read_at: datetime | None


class ReadReceipt(msgspec.Struct, kw_only=True):
    """`POST …/conversations/{id}/read`: how many of the end user's messages were newly marked read."""

    conversation_id: uuid.UUID
    marked: int
    read_at: datetime
