"""Levels of access, one scale for people and keys: what a role or a key's scopes allow.

The router checks them for its own endpoints and the cell checks them again for
its routes, so both read the levels from here. A key's `ingest` scope is not on
the scale: it opens `/v1/ingest/…` only and reads nothing of a project.
"""

from __future__ import annotations

from collections.abc import Iterable

READ, WRITE, ADMIN, OWNER = 1, 2, 3, 4
SCOPE_LEVEL = {"read": READ, "write": WRITE, "admin": ADMIN}
ROLE_LEVEL = {"viewer": READ, "agent": WRITE, "admin": ADMIN, "owner": OWNER}
LEVEL_NAME = {READ: "read", WRITE: "write", ADMIN: "admin", OWNER: "owner"}


def scope_level(scopes: Iterable[str]) -> int:
    """The highest level a key's scopes grant (0 for an ingest-only key: nothing beyond ingest)."""
    return max((SCOPE_LEVEL.get(s, 0) for s in scopes), default=0)
