"""Signing of the router → cell hop.

A cell answers only requests the router signed: HMAC-SHA256 with the cell's
shared secret over the method, the path with its query, a timestamp and the
actor assertion (who is acting, with what role). A request that is unsigned,
signed with another secret, altered, or older than `MAX_SKEW` seconds is refused,
so a cell is never reachable around the router.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Literal

import msgspec

TIMESTAMP = "x-relay-timestamp"
ACTOR = "x-relay-actor"
SIGNATURE = "x-relay-signature"
MAX_SKEW = 30


class Actor(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who the router says is acting.

    `key`: an API key the cell must still verify in full (the router only saw its prefix).
    `admin`: a dashboard user whose session and membership the router checked; `role` is theirs.
    `router`: the router itself, for provisioning.
    `public`: nobody the router could authenticate, on `/v1/hooks/{project_id}/…` only — inbound
    webhooks from providers (Linear, Jira, GitHub), which the cell verifies by their own signatures.
    `epoch` is the project's routing epoch in the router's directory: a cell that knows a newer one answers
    421, so a router with a stale map can never write to a project's old cell after a move's fence.
    """

    kind: Literal["key", "admin", "router", "public"]
    project_id: str | None = None
    key_prefix: str | None = None
    user_id: str | None = None
    role: str | None = None
    ip: str | None = None
    epoch: int | None = None
    csrf: str | None = None
    """Dashboard pages only: the session's CSRF token, which the router checked; the cell renders it into its
    forms and checks each form's copy against it (common.web)."""


class SignatureError(Exception):
    """The hop signature is missing, malformed, stale or wrong."""


def _mac(secret: bytes, method: str, target: str, ts: str, actor: str) -> str:
    msg = "\n".join((method.upper(), target, ts, actor)).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def sign(secret: bytes, method: str, target: str, actor: Actor, now: float | None = None) -> dict[str, str]:
    """Headers that authenticate a request to `target` (path plus `?query`) on a cell."""
    ts = str(int(now if now is not None else time.time()))
    encoded = base64.urlsafe_b64encode(msgspec.json.encode(actor)).decode()
    return {TIMESTAMP: ts, ACTOR: encoded, SIGNATURE: _mac(secret, method, target, ts, encoded)}


def verify(
    secret: bytes, method: str, target: str, ts: str | None, actor: str | None, signature: str | None,
    now: float | None = None,
) -> Actor:
    """Check a signed hop and return its actor, or raise SignatureError."""
    if not ts or not actor or not signature:
        raise SignatureError("request is not signed by the router")
    try:
        stamp = int(ts)
    except ValueError as exc:
        raise SignatureError("bad timestamp") from exc
    if abs((now if now is not None else time.time()) - stamp) > MAX_SKEW:
        raise SignatureError("stale signature")
    if not hmac.compare_digest(_mac(secret, method, target, ts, actor), signature):
        raise SignatureError("bad signature")
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(actor), type=Actor)
    except (ValueError, msgspec.DecodeError) as exc:
        raise SignatureError("bad actor assertion") from exc
