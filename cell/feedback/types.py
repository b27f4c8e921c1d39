"""Wire types of the feedback board: items, votes and the interactions linked to items."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from cell.users import EndUserIn

FeedbackStatus = Literal["under_review", "planned", "in_progress", "shipped", "wont_do"]
# What the public board shows: everything but the items the team declined.
PublicStatus = Literal["under_review", "planned", "in_progress", "shipped"]
MAX_TITLE, MAX_CATEGORY = 500, 100  # the columns' lengths
Title = Annotated[str, Meta(min_length=1, max_length=MAX_TITLE)]
Description = Annotated[str, Meta(max_length=10_000)]
Category = Annotated[str, Meta(min_length=1, max_length=MAX_CATEGORY)]


def not_blank(title: object) -> None:
    """A title has to say something: whitespace alone is refused like an empty one."""
    if isinstance(title, str) and not title.strip():
        raise ValueError("title must not be blank - at `$.title`")


class FeedbackItemIn(msgspec.Struct, kw_only=True):
    """`POST …/feedback-items`: a team member adds an item to the board."""

    title: Title
    description: Description | None = None
    status: FeedbackStatus = "under_review"
    category: Category | None = None

    def __post_init__(self) -> None:
        not_blank(self.title)


class FeedbackItemPatch(msgspec.Struct, kw_only=True):
    """`PATCH …/feedback-items/{id}`: absent fields are left alone, null clears the optional ones."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    status: FeedbackStatus | msgspec.UnsetType = msgspec.UNSET
    category: Category | msgspec.UnsetType | None = msgspec.UNSET

    def __post_init__(self) -> None:
        not_blank(self.title)


class FeedbackItem(msgspec.Struct, kw_only=True):
    """A feedback item as the management API returns it."""

    id: uuid.UUID
    project_id: uuid.UUID
    title: str
    description: str | None
    status: FeedbackStatus
    category: str | None
    vote_count: int
    linked_interaction_count: int
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class PublicFeedbackItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A feedback item as end users see it on the board; `voted` when the board was asked for a session."""

    id: uuid.UUID
    title: str
    description: str | None
    status: PublicStatus
    category: str | None
    vote_count: int
    created_at: datetime
    voted: bool | None = None


class SuggestionIn(msgspec.Struct, kw_only=True):
    """`POST /v1/ingest/feedback-items`: an end user suggests an item; `id` makes retries safe."""

    title: Title
    description: Description | None = None
    category: Category | None = None
    id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    user: EndUserIn | None = None

    def __post_init__(self) -> None:
        not_blank(self.title)


class VoteIn(msgspec.Struct, kw_only=True):
    """`POST /v1/ingest/feedback-items/{id}/votes`: one vote per session."""

    session_id: uuid.UUID
    user: EndUserIn | None = None


class Vote(msgspec.Struct, kw_only=True):
    """One vote on a feedback item."""

    id: uuid.UUID
    feedback_item_id: uuid.UUID
    session_id: uuid.UUID | None
    user_id: uuid.UUID | None
    created_at: datetime


class VoteReceipt(Vote, kw_only=True):
    """The vote as the voter gets it back, with the item's count after it."""

    vote_count: int


class VoteCount(msgspec.Struct, kw_only=True):
    """What un-voting leaves: the item's count, and whether this session still votes for it."""

    feedback_item_id: uuid.UUID
    vote_count: int
    voted: bool


class LinkIn(msgspec.Struct, kw_only=True):
    """`POST …/feedback-items/{id}/links`."""

    interaction_id: uuid.UUID


class FeedbackLink(msgspec.Struct, kw_only=True):
    """An interaction linked to a feedback item."""

    id: uuid.UUID
    feedback_item_id: uuid.UUID
    interaction_id: uuid.UUID
    created_at: datetime


class LinkReceipt(FeedbackLink, kw_only=True):
    """The link as the caller gets it back, with the item's count after it."""

    linked_interaction_count: int


class FeedbackRef(msgspec.Struct, kw_only=True, tag_field="kind", tag="feedback"):
    """In `interactions/{id}/links`: a feedback item the interaction is linked to."""

    id: uuid.UUID
    feedback_item_id: uuid.UUID
    title: str
    status: FeedbackStatus
    created_at: datetime


class IssueRef(msgspec.Struct, kw_only=True, tag_field="kind", tag="issue"):
    """In `interactions/{id}/links`: an issue in a tracker (Linear, Jira, GitHub) the interaction is filed as."""

    provider: str
    external_id: str
    external_url: str | None
    created_at: datetime | None


class InteractionLinks(msgspec.Struct):
    """Everything linked to one interaction (the list envelope; never more than one page)."""

    data: list[FeedbackRef | IssueRef]
    next_cursor: str | None = None
