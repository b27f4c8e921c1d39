"""Opaque keyset cursors (common.paging) and the `{data, next_cursor}` list envelope of the contract."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Generic, Protocol, TypeVar

import msgspec

from common.paging import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor, limit_of

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "decode_cursor", "encode_cursor", "limit_of", "newest_first"]

T = TypeVar("T")


class Timestamped(Protocol):
    """A row listed newest first: the two fields a keyset cursor holds."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


R = TypeVar("R", bound=Timestamped)


class Page(msgspec.Struct, Generic[T]):
    """One page of a list."""

    data: list[T]
    next_cursor: str | None


def newest_first(rows: list[R], size: int) -> Page[R]:
    """The page of a list fetched with `limit + 1` rows, newest first: the extra row only says whether a
    next page exists, and the cursor points after the last row shown."""
    data = rows[:size]
    more = len(rows) > size
    return Page(data, encode_cursor(data[-1].created_at, data[-1].id) if more else None)
