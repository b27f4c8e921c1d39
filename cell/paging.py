"""Opaque keyset cursors and the `{data, next_cursor}` list envelope of the contract."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Generic, Protocol, TypeVar

import msgspec

from common.problems import Problem

T = TypeVar("T")


class Timestamped(Protocol):
    """A row listed newest first: the two fields a keyset cursor holds."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


R = TypeVar("R", bound=Timestamped)
DEFAULT_LIMIT, MAX_LIMIT = 50, 200


class Page(msgspec.Struct, Generic[T]):
    """One page of a list."""

    data: list[T]
    next_cursor: str | None


def limit_of(limit: int | None) -> int:
    """The page size asked for, checked against the contract's bounds."""
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(422, f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    """A cursor positioned after the row (`at`, `row_id`) in (time desc, id desc) order."""
    raw = msgspec.json.encode([at.isoformat(), str(row_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position inside a cursor; a cursor that was not ours is a 422."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = msgspec.json.decode(raw, type=tuple[str, str])
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except (ValueError, msgspec.DecodeError) as exc:
        raise Problem(422, "cursor is not valid") from exc


def newest_first(rows: list[R], size: int) -> Page[R]:
    """The page of a list fetched with `limit + 1` rows, newest first: the extra row only says whether a
    next page exists, and the cursor points after the last row shown."""
    data = rows[:size]
    more = len(rows) > size
    return Page(data, encode_cursor(data[-1].created_at, data[-1].id) if more else None)
