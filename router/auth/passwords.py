"""Password hashing with bcrypt, off the event loop (a hash costs tens of milliseconds)."""

from __future__ import annotations

import asyncio

import bcrypt

ROUNDS = 12
# A hash of a random password: checking unknown emails costs as much as known ones.
_DUMMY = bcrypt.hashpw(b"relay-dummy-password", bcrypt.gensalt(rounds=ROUNDS))


async def hash_password(password: str) -> str:
    """The bcrypt hash to store."""
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds=ROUNDS))
    return hashed.decode()


async def check_password(password: str, hashed: str | None) -> bool:
    """Whether `password` matches; with no hash, a dummy check keeps the timing the same."""
    ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), (hashed or "").encode() or _DUMMY)
    return ok and hashed is not None
