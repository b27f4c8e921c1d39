"""Password hashing with bcrypt, off the event loop (a hash costs tens of milliseconds)."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import bcrypt

ROUNDS = 12
# A hash of a random password: checking unknown emails costs as much as known ones.
_DUMMY = bcrypt.hashpw(b"relay-dummy-password", bcrypt.gensalt(rounds=ROUNDS))


BCRYPT_MAX_BYTES = 72


def secret_of(password: str) -> bytes:
    """What bcrypt is given for `password`: its UTF-8 bytes when they fit bcrypt's 72, else the base64 of
    their SHA-256 (44 bytes), so every byte of a long password counts. bcrypt refuses longer input outright
    (ValueError), and passwords of up to 200 characters, or a login with any, must not be a 500; no stored
    hash is of a longer password, so hashes of shorter ones are unchanged."""
    raw = password.encode()
    if len(raw) <= BCRYPT_MAX_BYTES:
        return raw
    return base64.b64encode(hashlib.sha256(raw).digest())


async def hash_password(password: str) -> str:
    """The bcrypt hash to store."""
    hashed = await asyncio.to_thread(bcrypt.hashpw, secret_of(password), bcrypt.gensalt(rounds=ROUNDS))
    return hashed.decode()


async def check_password(password: str, hashed: str | None) -> bool:
    """Whether `password` matches; with no hash, a dummy check keeps the timing the same."""
    ok = await asyncio.to_thread(bcrypt.checkpw, secret_of(password), (hashed or "").encode() or _DUMMY)
    return ok and hashed is not None
