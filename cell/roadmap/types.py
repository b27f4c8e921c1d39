"""Wire types of the roadmap: items, their order, and the feedback items they answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from cell.feedback.types import Description, FeedbackStatus, Title, not_blank

Visibility = Literal["public", "private"]
RoadmapStatus = Literal["planned", "in_progress", "shipped"]
SortOrder = Annotated[int, Meta(ge=-1_000_000_000, le=1_000_000_000)]
Eta = Annotated[datetime, Meta(tz=True)]
MAX_REORDER = 1000


class RoadmapItemIn(msgspec.Struct, kw_only=True):
    """`POST …/roadmap-items`; without `sort_order` the item goes to the end."""

    title: Title
    description: Description | None = None
    visibility: Visibility = "public"
    status: RoadmapStatus = "planned"
    sort_order: SortOrder | None = None
    eta: Eta | None = None

    def __post_init__(self) -> None:
        not_blank(self.title)


class RoadmapItemPatch(msgspec.Struct, kw_only=True):
    """`PATCH …/roadmap-items/{id}`: absent fields are left alone, null clears description and eta."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    visibility: Visibility | msgspec.UnsetType = msgspec.UNSET
    status: RoadmapStatus | msgspec.UnsetType = msgspec.UNSET
    sort_order: SortOrder | msgspec.UnsetType = msgspec.UNSET
    eta: Eta | msgspec.UnsetType | None = msgspec.UNSET

    def __post_init__(self) -> None:
        not_blank(self.title)


class RoadmapItem(msgspec.Struct, kw_only=True):
    """A roadmap item as the management API returns it."""

    id: uuid.UUID
    project_id: uuid.UUID
    title: str
    description: str | None
    visibility: Visibility
    status: RoadmapStatus
    sort_order: int
    eta: datetime | None
    linked_feedback_count: int
    created_at: datetime
    updated_at: datetime


class PublicRoadmapItem(msgspec.Struct, kw_only=True):
    """A roadmap item as end users see it."""

    id: uuid.UUID
    title: str
    description: str | None
    status: RoadmapStatus
    sort_order: int
    eta: datetime | None


class ReorderIn(msgspec.Struct, kw_only=True):
    """`POST …/roadmap-items/reorder`: these items first, in this order; the others keep theirs after them."""

    ids: Annotated[list[uuid.UUID], Meta(min_length=1, max_length=MAX_REORDER)]

    def __post_init__(self) -> None:
        seen: set[uuid.UUID] = set()
        for i, item_id in enumerate(self.ids):
            if item_id in seen:
                raise ValueError(f"ids must not repeat - at `$.ids[{i}]`")
            seen.add(item_id)


class FeedbackLinkIn(msgspec.Struct, kw_only=True):
    """`POST|DELETE …/roadmap-items/{id}/feedback`."""

    feedback_item_id: uuid.UUID


class LinkedFeedback(msgspec.Struct, kw_only=True):
    """A feedback item a roadmap item answers, with what the board shows of it."""

    id: uuid.UUID
    roadmap_item_id: uuid.UUID
    feedback_item_id: uuid.UUID
    title: str
    status: FeedbackStatus
    vote_count: int
    created_at: datetime


class LinkedFeedbackReceipt(LinkedFeedback, kw_only=True):
    """The link as the caller gets it back, with the roadmap item's count after it."""

    linked_feedback_count: int
