"""Wire types of session replays, as the contract and the data model name them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

ReplayStatus = Literal["recording", "processing", "ready", "failed"]


class Chunk(msgspec.Struct, kw_only=True, rename="camel"):
    """One entry of `replays.chunks`: `{index, storageKey, eventCount, startTime, endTime}` (times in ms)."""

    index: int
    storage_key: str
    event_count: int
    start_time: float
    end_time: float


class Replay(msgspec.Struct, kw_only=True):
    """A replay in lists; counts and times come from the chunk index until processing checks them against
    the chunks themselves (`ready`)."""

    id: uuid.UUID
    session_id: uuid.UUID | None
    interaction_id: uuid.UUID | None
    status: ReplayStatus
    event_count: int
    duration: int | None
    started_at: datetime | None
    ended_at: datetime | None
    chunk_count: int
    created_at: datetime
    failure_reason: str | None = None
    """Why processing failed (a missing or corrupt chunk, no events); null unless `failed`."""
    privacy_scope: dict[str, Any] | None = None
    """What the project's privacy rules redacted from its events (rule, counts per scope); never the values."""


class ReplayDetail(Replay, kw_only=True):
    """One replay with its chunk index, in index order."""

    chunks: list[Chunk]


class ChunkAck(msgspec.Struct, kw_only=True):
    """The answer to a chunk upload: the chunk as indexed (the stored one on a retry)."""

    replay_id: uuid.UUID
    status: ReplayStatus
    chunk: Chunk
