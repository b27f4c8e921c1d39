"""Signing of the router → cell hop.

A cell answers only requests the router signed: HMAC-SHA256 with the cell's
shared secret over the method, the path with its query, a timestamp, a random
nonce, the body's SHA-256 digest and the actor assertion (who is acting, with
what role). A request that is unsigned, signed with another secret, altered
(body included), older than `MAX_SKEW` seconds, or replayed (a nonce the cell
has seen within the window; see `cell.auth.NonceBook`) is refused, so a cell is
never reachable around the router and a captured request is worth nothing.

The body is bound in one of two ways (header `x-relay-body`, itself signed):

- `sha256=<hex>`: a buffered body (JSON, at most 1 MiB). The cell hashes what it
  receives and refuses a mismatch before the handler sees the end of the body.
- `streamed`: an upload the router streams without buffering. The router hashes
  it as it goes and appends a `TRAILER_LEN`-byte trailer, HMAC(secret, signature
  ‖ SHA-256 of the body), after the last byte (Content-Length, when declared,
  grows by the trailer). The cell holds back the trailing bytes, passes the rest
  on, and releases the end of the body to the handler only once the trailer
  checks; otherwise the handler sees a disconnect and nothing is committed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Literal

import msgspec

TIMESTAMP = "x-relay-timestamp"
ACTOR = "x-relay-actor"
SIGNATURE = "x-relay-signature"
NONCE = "x-relay-nonce"
BODY = "x-relay-body"
HEADERS = (TIMESTAMP, ACTOR, SIGNATURE, NONCE, BODY)
"""Every header of the hop's signature: a client never sets one (the router drops them)."""
MAX_SKEW = 30
NONCE_TTL = 2 * MAX_SKEW + 1
"""How long a cell remembers a nonce: a signature is accepted MAX_SKEW seconds either side of now."""
STREAMED = "streamed"
TRAILER_LEN = 64
"""Length of the hex HMAC trailer that follows a streamed body."""
_NONCE_BYTES = 16


class Actor(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who the router says is acting.

    `key`: an API key the router verified in full (prefix and secret); the cell verifies it again (defence in depth).
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
    """The hop signature is missing, malformed, stale or wrong, or the body does not match it."""


def digest(body: bytes) -> str:
    """The `x-relay-body` value of a buffered body."""
    return "sha256=" + hashlib.sha256(body).hexdigest()


def _mac(secret: bytes, method: str, target: str, ts: str, nonce: str, body: str, actor: str) -> str:
    msg = "\n".join((method.upper(), target, ts, nonce, body, actor)).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def trailer(secret: bytes, signature: str, body_sha256: bytes) -> bytes:
    """The trailer after a streamed body: it binds the body's digest to the request's signature."""
    return hmac.new(secret, b"relay-body\n" + signature.encode() + b"\n" + body_sha256,
                    hashlib.sha256).hexdigest().encode()


def sign(secret: bytes, method: str, target: str, actor: Actor, now: float | None = None, *,
         body: bytes | None = b"", nonce: str | None = None) -> dict[str, str]:
    """Headers that authenticate a request to `target` (path plus `?query`) with `body` on a cell.

    `body=None` says the body is streamed: send it through `signed_stream` with these headers.
    """
    ts = str(int(now if now is not None else time.time()))
    once = nonce if nonce is not None else secrets.token_hex(_NONCE_BYTES)
    bound = STREAMED if body is None else digest(body)
    encoded = base64.urlsafe_b64encode(msgspec.json.encode(actor)).decode()
    return {TIMESTAMP: ts, NONCE: once, BODY: bound, ACTOR: encoded,
            SIGNATURE: _mac(secret, method, target, ts, once, bound, encoded)}


async def signed_stream(secret: bytes, headers: dict[str, str], chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """A streamed body as sent on the hop: its chunks, hashed as they pass, then the trailer."""
    hashed = hashlib.sha256()
    async for chunk in chunks:
        hashed.update(chunk)
        yield chunk
    yield trailer(secret, headers[SIGNATURE], hashed.digest())


def verify(
    secret: bytes, method: str, target: str, ts: str | None, actor: str | None, signature: str | None,
    now: float | None = None, *, nonce: str | None = None, body: str | None = None,
) -> Actor:
    """Check a signed hop's headers and return its actor, or raise SignatureError.

    The body itself is checked as it arrives (`BodyCheck`), the nonce against what the cell remembers.
    """
    if not ts or not actor or not signature or not nonce or not body:
        raise SignatureError("request is not signed by the router")
    try:
        stamp = int(ts)
    except ValueError as exc:
        raise SignatureError("bad timestamp") from exc
    if abs((now if now is not None else time.time()) - stamp) > MAX_SKEW:
        raise SignatureError("stale signature")
    if len(nonce) != 2 * _NONCE_BYTES or (body != STREAMED and not body.startswith("sha256=")):
        raise SignatureError("bad nonce or body digest")
    if not hmac.compare_digest(_mac(secret, method, target, ts, nonce, body, actor), signature):
        raise SignatureError("bad signature")
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(actor), type=Actor)
    except (ValueError, msgspec.DecodeError) as exc:
        raise SignatureError("bad actor assertion") from exc


class BodyCheck:
    """The cell's side of the body binding, fed the body's chunks as they arrive.

    `feed` returns what may be passed on now (for a streamed body, all but the last `TRAILER_LEN`
    bytes seen so far); `finish` raises SignatureError unless the whole body matches the signature.
    """

    def __init__(self, secret: bytes, signature: str, body: str) -> None:
        self.secret = secret
        self.signature = signature
        self.streamed = body == STREAMED
        self.declared = body
        self.hashed = hashlib.sha256()
        self.held = b""

    def feed(self, chunk: bytes) -> bytes:
        """The part of `chunk` that may be handed on (hashed already)."""
        if not self.streamed:
            self.hashed.update(chunk)
            return chunk
        data = self.held + chunk
        cut = max(len(data) - TRAILER_LEN, 0)
        out, self.held = data[:cut], data[cut:]
        self.hashed.update(out)
        return out

    def finish(self) -> None:
        """Check the body once it has all arrived."""
        if self.streamed:
            expected = trailer(self.secret, self.signature, self.hashed.digest())
            if len(self.held) != TRAILER_LEN or not hmac.compare_digest(self.held, expected):
                raise SignatureError("the streamed body does not match its signature")
        elif not hmac.compare_digest("sha256=" + self.hashed.hexdigest(), self.declared):
            raise SignatureError("the body does not match its signature")
