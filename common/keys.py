"""The API key format (`rk_<tag>_<id>_<secret>`), session tokens, and how a presented credential is read.

A key's secret is 32 random alphanumerics (about 190 bits): nobody can search
that space, so a slow password hash buys nothing. What the router and the cell
store is a keyed digest, HMAC-SHA256 of the whole key under a server-side
pepper (`digest`), compared in constant time (`matches`), as GitHub and Stripe
store their tokens; a stolen table without the pepper tells nothing. Both
services read what a caller presented with `presented` alone: the
`Authorization: Bearer` header, or `?key=` on ingest paths (browser beacons).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

from common.problems import Problem

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


def digest(pepper: bytes, key: str) -> str:
    """The stored form of a key: hex HMAC-SHA256 of the whole key under the deployment's key pepper."""
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def matches(pepper: bytes, key: str, stored: str) -> bool:
    """Whether `key` is the key whose digest is `stored` (constant time)."""
    return hmac.compare_digest(digest(pepper, key), stored)


@dataclass(frozen=True, slots=True)
class Presented:
    """A credential as a request carried it: a well-formed API key (with its prefix) or a session token."""

    kind: Literal["key", "session"]
    token: str
    prefix: str = ""


def presented(authorization: str | None, query_string: str | bytes | None = None, *,
              ingest: bool = False) -> Presented | None:
    """What a request presents, or None for nothing; a malformed key or token is a 401 problem.

    The header wins; `?key=` counts only on ingest paths (`ingest`), where a `sendBeacon` cannot set headers.
    A key must match the format in full (prefix and 32-character secret); a session token starts with `rs_`.
    """
    token = bearer(authorization)
    if token is None and ingest and query_string:
        query = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
        found = parse_qs(query).get("key")
        token = found[0] if found else None
    if token is None:
        if authorization:
            raise Problem(401, "send credentials as Authorization: Bearer <token>")
        return None
    if token.startswith("rs_"):
        return Presented("session", token)
    prefix = key_prefix(token)
    if prefix is None:
        raise Problem(401, "malformed API key")
    return Presented("key", token, prefix)


def bearer(authorization: str | None) -> str | None:
    """The token from an `Authorization: Bearer <token>` header value, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
