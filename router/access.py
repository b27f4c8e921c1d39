"""Who is calling the router, checked in one place: the client's address, API keys, admin sessions.

Every router endpoint and the proxy ask here before anything else. A key is
verified in full, prefix and secret, against the keyed digest in the router's
in-memory directory (one HMAC, no I/O), so a made-up secret on a real prefix is
a 401 at the edge and never reaches a cell. Wrong secrets and unknown prefixes
are counted per client (`bad_credentials`), unknown session tokens too
(`bad_sessions`); past the limit they get 429.

A key created before the router kept digests has none in its directory entry.
Its cell verifies it once (`POST /internal/projects/{id}/api-keys/verify`,
bcrypt there) and only once the cell accepted it does the router record the
digest, scopes and expiry, so a guess can never plant a digest. Those cell
calls are the only costly refusals left: they are single-flight per key and
limited per client and per prefix before the cell is asked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request

from common.access import LEVEL_NAME, scope_level
from common.keys import Presented, bearer, digest, fingerprint, matches, presented
from common.netaddr import client_address, networks
from common.problems import Problem
from common.signing import Actor
from router.auth import sessions
from router.directory import KEY_COLUMNS, Change, KeyEntry, publish
from router.ratelimit import client_tag
from router.state import RouterState

ROUTER = Actor(kind="router")
BAD_KEY = "invalid or revoked API key"


class Verified(msgspec.Struct):
    """What a cell answers when it accepted a key presented for verification."""

    id: uuid.UUID
    scopes: list[str]
    expires_at: datetime | None = None


def client_ip(st: RouterState, scope: Mapping[str, object]) -> str | None:
    """The client's address: the peer, or behind a trusted proxy (RELAY_TRUSTED_PROXIES) the rightmost
    untrusted `X-Forwarded-For` hop. The one source for rate limits, audit IPs and the cells' `ip_hash`."""
    peer: Any = scope.get("client")
    headers: Any = scope["headers"]
    forwarded = [bytes(v).decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
    return client_address(str(peer[0]) if peer else None, forwarded, networks(tuple(st.settings.trusted_proxies)))


async def bad_credentials(st: RouterState, ip: str | None, detail: str = BAD_KEY) -> Problem:
    """Count one bad credential against the client: the 401 to raise, or a 429 raised past the limit."""
    await st.limiter.enforce("bad_credentials", client_tag(ip))
    return Problem(401, detail)


def _refused(st: RouterState, *identity: str, category: str = "bad_credentials") -> None:
    wait = st.limiter.refused_recently(category, *identity)
    if wait:
        raise Problem(429, f"rate limit for {category.replace('_', ' ')} exceeded",
                      headers={"Retry-After": str(wait)})


async def verify_key(st: RouterState, key: Presented, ip: str | None) -> KeyEntry:
    """The directory entry of a presented key whose prefix and secret are right, live and unexpired; else 401
    (429 past the client's limit of bad credentials)."""
    entry = st.directory.key(key.prefix)
    if entry is None and not st.directory.unknown_recently(key.prefix):
        try:  # created moments ago through another router process?
            entry = await asyncio.wait_for(st.directory.fetch_key(st.pool, key.prefix), 2.0)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            entry = None
    if entry is None or entry.revoked:
        raise await bad_credentials(st, ip)
    if entry.digest is None:
        entry = await _verify_in_cell(st, entry, key.token, ip)
    elif not matches(st.settings.key_pepper.encode(), key.token, entry.digest):
        raise await bad_credentials(st, ip)
    if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
        raise Problem(401, "API key expired")
    return entry


async def key_first(request: Request[Any, Any, Any]) -> None:
    """The router's own endpoints (a Litestar `before_request` hook): a key presented is verified in full before
    anything else, before its body or query is even parsed, so a made-up secret on a real prefix is a 401 (counted
    against the client) on every one of them, never a 422 that answers for the body. Each handler then checks
    the key's project and scopes as before. Session tokens and other bearer tokens (the metrics token) are left
    to the handlers."""
    token = bearer(request.headers.get("authorization"))
    if token is None or not token.startswith("rk_"):
        return None
    credential = presented(request.headers.get("authorization"))  # a malformed key: 401 here
    assert credential is not None
    st: RouterState = request.app.state.router
    await verify_key(st, credential, client_ip(st, request.scope))
    return None


def require_scope(entry: KeyEntry, level: int = 0, *, ingest: bool = False) -> None:
    """403 unless the key's scopes reach `level` (and include `ingest` when asked)."""
    if ingest and "ingest" not in entry.scopes:
        raise Problem(403, "this endpoint needs a key with the ingest scope")
    if level and scope_level(entry.scopes) < level:
        raise Problem(403, f"this needs the {LEVEL_NAME[level]} scope or role")


async def _verify_in_cell(st: RouterState, entry: KeyEntry, key: str, ip: str | None) -> KeyEntry:
    """A key without a digest yet: its cell decides; the digest is recorded only after it accepted."""
    _refused(st, client_tag(ip))
    _refused(st, "prefix", entry.key_prefix)
    mark = fingerprint(key)
    waiting = st.directory.verifying.get(mark)
    if waiting is not None:  # the same key in flight already: one cell call (and one bcrypt) for all
        found = await asyncio.shield(waiting)
    else:
        future: asyncio.Future[KeyEntry | None] = asyncio.get_running_loop().create_future()
        st.directory.verifying[mark] = future
        try:
            found = await _ask_cell(st, entry, key)
            future.set_result(found)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: the waiters re-raise it
            raise
        finally:
            del st.directory.verifying[mark]
    if found is None:
        await st.limiter.enforce("bad_credentials", "prefix", entry.key_prefix)
        raise await bad_credentials(st, ip)
    return found


async def _ask_cell(st: RouterState, entry: KeyEntry, key: str) -> KeyEntry | None:
    response = await st.cells[entry.region].call(
        "POST", f"/internal/projects/{entry.project_id}/api-keys/verify", ROUTER, json={"key": key})
    if response.status_code in (401, 404):
        return None
    if response.status_code != 200:
        raise Problem(503, "this key cannot be verified right now", retry_after=2)
    verified = msgspec.json.decode(response.content, type=Verified)
    if verified.id != entry.key_id:
        return None
    stored = msgspec.structs.replace(entry, digest=digest(st.settings.key_pepper.encode(), key),
                                     scopes=sorted(verified.scopes), expires_at=verified.expires_at)
    try:
        row = await st.pool.fetchrow(
            f"""UPDATE key_directory SET key_digest = $3, scopes = $4, expires_at = $5, updated_at = now()
                 WHERE key_prefix = $1 AND key_id = $2 RETURNING {KEY_COLUMNS}""",
            entry.key_prefix, entry.key_id, stored.digest, stored.scopes, stored.expires_at)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        st.directory.apply(Change(key=stored))  # this process at least; recorded at a later use
        return stored
    if row is None:  # revoked or discarded meanwhile
        return None
    updated = KeyEntry.of(row)
    await publish(st.redis, st.directory, Change(key=updated))
    return updated


async def session(st: RouterState, token: str, project_id: uuid.UUID | None, ip: str | None) -> sessions.Session:
    """The admin session behind an `rs_` token, with the role in `project_id`. Unknown tokens are counted per
    client (`bad_sessions`); a client past that limit is refused (429) before the control DB is asked at all,
    until its window frees up."""
    _refused(st, client_tag(ip), category="bad_sessions")
    try:
        return await sessions.resolve(st.pool, token, project_id)
    except Problem as problem:
        if problem.status == 401:
            await st.limiter.enforce("bad_sessions", client_tag(ip))
        raise
