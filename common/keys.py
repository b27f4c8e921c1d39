"""The API key format (`rk_<tag>_<id>_<secret>`) and session tokens, in one place.

The router routes on the 12-character prefix alone; the cell verifies the whole key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string

KEY_RE = re.compile(r"^rk_([a-z]{2})_([a-z0-9]{6})_([A-Za-z0-9]{32})$")
PREFIX_RE = re.compile(r"^rk_[a-z]{2}_[a-z0-9]{6}$")
PREFIX_LEN = 12
SCOPES = ("ingest", "read", "write", "admin")

_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits


def new_key_prefix(tag: str) -> str:
    """A fresh `rk_<tag>_<id>` prefix; uniqueness is enforced by the router's key directory."""
    return f"rk_{tag}_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))


def new_key(prefix: str) -> str:
    """A full key for `prefix`: 32 random alphanumerics (about 190 bits) after it."""
    return prefix + "_" + "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))


def key_prefix(key: str) -> str | None:
    """The routing prefix of a well-formed key, or None when the key is malformed."""
    return key[:PREFIX_LEN] if KEY_RE.match(key) else None


def key_tag(prefix: str) -> str:
    """The region tag hint inside a prefix (`us` in `rk_us_abc123`)."""
    return prefix[3:5]


def fingerprint(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret: the cache key for keys, the stored form of session tokens."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_session_token() -> str:
    """An admin session token: `rs_` and 43 url-safe characters (256 bits)."""
    return "rs_" + secrets.token_urlsafe(32)


def bearer(authorization: str | None) -> str | None:
    """The token from an `Authorization: Bearer <token>` header value, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
