"""Paging of lists: the page size bounds, and keyset cursors over (time, id), newest first — the one cursor shape
of every list the cells and the router serve.

A cursor is the position after a row in (created_at desc, id desc) order. Both
planes list their audit entries in that order by the same two fields, so one
position pages through a list merged from both (router/audit.py) as well as
through either alone.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import msgspec

from common.problems import Problem

DEFAULT_LIMIT, MAX_LIMIT = 50, 200


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
