"""Wire types of interactions, as the contract names them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from cell.users import EndUserIn

InteractionType = Literal["bug", "feedback", "chat", "survey", "replay", "system"]
Source = Literal["widget", "sdk", "api"]
Severity = Literal["low", "med", "high", "critical"]
Status = Literal["new", "triaging", "in_progress", "resolved", "closed"]
Provider = Literal["linear", "jira", "github"]

MAX_TAGS, MAX_TAG_LEN = 50, 100
MAX_DEPTH = 32


def check_depth(value: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than `limit` (it would exhaust recursion when stored or scrubbed)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise ValueError(f"nested deeper than {limit} levels - at `$.{where}`")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


class LogsIn(msgspec.Struct):
    """Console, network and error logs captured by the SDK."""

    console: list[dict[str, Any]] | None = None
    network: list[dict[str, Any]] | None = None
    errors: list[dict[str, Any]] | None = None


class InteractionIn(msgspec.Struct, kw_only=True):
    """`POST /v1/ingest/interactions`."""

    type: InteractionType
    content: dict[str, Any] = msgspec.field(default_factory=dict)
    id: uuid.UUID | None = None
    source: Source | None = None
    session_id: uuid.UUID | None = None
    user: EndUserIn | None = None
    severity: Severity | None = None
    tags: list[str] | None = None
    logs: LogsIn | None = None
    technical_context: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for field in ("text", "title", "description"):
            value = self.content.get(field)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"Expected `str` - at `$.content.{field}`")
        if self.tags is not None:
            check_tags(self.tags)
        check_depth(self.content, "content")
        if self.technical_context is not None:
            check_depth(self.technical_context, "technical_context")
        if self.logs is not None:
            for name in ("console", "network", "errors"):
                check_depth(getattr(self.logs, name), f"logs.{name}")
        if self.user is not None and self.user.traits is not None:
            check_depth(self.user.traits, "user.traits")


def check_tags(tags: list[str]) -> None:
    """Tags are short and few."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags - at `$.tags`")
    for i, tag in enumerate(tags):
        if not 1 <= len(tag) <= MAX_TAG_LEN:
            raise ValueError(f"tags are 1 to {MAX_TAG_LEN} characters - at `$.tags[{i}]`")


class InteractionPatch(msgspec.Struct, kw_only=True):
    """`PATCH …/interactions/{id}`: triage fields; absent fields are left alone, null clears."""

    status: Status | msgspec.UnsetType = msgspec.UNSET
    severity: Severity | msgspec.UnsetType | None = msgspec.UNSET
    tags: list[str] | msgspec.UnsetType = msgspec.UNSET
    assignee_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET

    def __post_init__(self) -> None:
        if not isinstance(self.tags, msgspec.UnsetType):
            check_tags(self.tags)


class AiMethod(msgspec.Struct, kw_only=True):
    """Which method wrote an interaction's enrichment fields, with its version: `local-extractive-v1` or
    `llm:<model>` for the summary, `local-rules-v1` or `llm:<model>` for the labels, and the grouping
    method (e.g. `local-v6`), whose automatic cut is calibrated for precision (cell/enrichment/grouping.py)."""

    summary: str | None = None
    labels: str | None = None
    grouping: str | None = None


class Interaction(msgspec.Struct, kw_only=True):
    """An interaction as the API returns it."""

    id: uuid.UUID
    project_id: uuid.UUID
    type: InteractionType
    source: Source | None
    status: Status
    severity: Severity | None
    tags: list[str]
    assignee_id: uuid.UUID | None
    user_id: uuid.UUID | None
    session_id: uuid.UUID | None
    content: dict[str, Any]
    technical_context: dict[str, Any]
    linked_issue_provider: Provider | None
    linked_issue_id: str | None
    linked_issue_url: str | None
    ai_summary: str | None
    ai_labels: list[str]
    ai_duplicate_group_id: str | None
    ai_confidence: float | None
    ai_method: AiMethod | None = None
    """Which method wrote the ai_* fields; null until the interaction is enriched."""
    duplicate_confirmed: bool = False
    """Whether a person put this interaction in its duplicate group (`POST …/duplicate-of`)."""
    privacy_scope: dict[str, Any]
    """What the privacy rules redacted before storage: rule and count, never the values."""
    created_at: datetime
    updated_at: datetime


class LogsOut(msgspec.Struct):
    """The logs stored with an interaction."""

    console: list[dict[str, Any]]
    network: list[dict[str, Any]]
    errors: list[dict[str, Any]]


class InteractionDetail(Interaction, kw_only=True):
    """One interaction with its logs."""

    logs: LogsOut | None = None
