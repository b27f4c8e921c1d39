"""Who is calling a cell, and what they may do — checked in one place.

Every request reaches a cell through the router, signed (see `common.signing`),
with a body that matches the signature and a nonce never seen before.
The signature proves the router sent it and carries the actor: an API key (which
the cell verifies in full against its bcrypt hash, then caches by SHA-256 of the
key for `key_recheck_seconds`), or a dashboard admin whose membership and role
the router checked. Handlers then ask for a scope level and a project with
`require` and get a 401/403/404/421 problem when the caller falls short.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import bcrypt
from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.keys import bearer, fingerprint, key_prefix, key_tag
from common.problems import Problem, encode
from common.signing import (
    ACTOR,
    BODY,
    NONCE,
    NONCE_TTL,
    SIGNATURE,
    TIMESTAMP,
    TRAILER_LEN,
    Actor,
    BodyCheck,
    SignatureError,
    verify,
)

READ, WRITE, ADMIN, OWNER = 1, 2, 3, 4
SCOPE_LEVEL = {"read": READ, "write": WRITE, "admin": ADMIN}
ROLE_LEVEL = {"viewer": READ, "agent": WRITE, "admin": ADMIN, "owner": OWNER}
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PLACEMENT_TTL = 1.0
"""Seconds a project's placement (move state, epoch) is trusted per process; a move's fence waits it out."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller bound to one project."""

    project_id: uuid.UUID
    level: int
    ingest: bool
    actor_type: str  # audit_actor_type: 'api' for keys, 'admin' for dashboard users, 'system'
    actor_id: str
    ip: str | None


def require(principal: Principal, project_id: uuid.UUID | None = None, *, level: int = 0,
            ingest: bool = False) -> Principal:
    """Refuse a caller that lacks the scope/role, or that belongs to another project (404, never which)."""
    if project_id is not None and principal.project_id != project_id:
        raise Problem(404, "no such project")
    if ingest and not principal.ingest:
        raise Problem(403, "this endpoint needs a key with the ingest scope")
    if level and principal.level < level:
        needed = {READ: "read", WRITE: "write", ADMIN: "admin", OWNER: "owner"}[level]
        raise Problem(403, f"this needs the {needed} scope or role")
    return principal


REDIS_RETRY_SECONDS = 5.0
"""After Redis fails a nonce check, how long the in-process map answers alone before Redis is tried again."""


class NonceBook:
    """The hop nonces this cell has seen within the signature window: a replay is refused.

    Shared by the cell's processes through its Redis (`SET NX EX`, one round trip); every nonce is also
    kept in a bounded in-process map, which alone answers while Redis is down. The map drops its oldest
    entries past `limit` (and expired ones as it goes), so memory stays bounded whatever the traffic.
    """

    def __init__(self, limit: int = 200_000, ttl: int = NONCE_TTL) -> None:
        self.limit = limit
        self.ttl = ttl
        self.redis: Redis | None = None
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._redis_down_until = 0.0

    def attach(self, redis: Redis | None) -> None:
        """Use the cell's Redis (set by the lifespan; None when it closes)."""
        self.redis = redis

    async def first_use(self, nonce: str) -> bool:
        """Whether `nonce` is new in the window (and remember it)."""
        now = time.monotonic()
        seen = self._seen
        while seen:
            oldest, expiry = next(iter(seen.items()))
            if expiry > now and len(seen) < self.limit:
                break
            del seen[oldest]
        if nonce in seen:
            return False
        seen[nonce] = now + self.ttl
        if self.redis is None or now < self._redis_down_until:
            return True
        try:
            fresh = await self.redis.set(f"relay:hop-nonce:{nonce}", b"1", nx=True, ex=self.ttl)
        except (RedisError, OSError):  # Redis down: this process's memory is all there is to go on
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS  # no timeout paid per request
            return True
        return bool(fresh)


class HopMiddleware:
    """Stamp every response with the region and request id; refuse anything the router did not sign.

    The headers are checked before the app runs (signature, age, nonce never seen); the body as it streams
    to the app, whose last chunk is released only once the body matches the signature. A body that does
    not is answered 401 and the app sees a disconnect, so it commits nothing of it.
    """

    def __init__(self, app: ASGIApp, *, region: str, secret: bytes, nonces: NonceBook | None = None) -> None:
        self.app = app
        self.region = region.encode()
        self.secret = secret
        self.nonces = nonces or NonceBook()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id") or uuid.uuid4().hex.encode()
        stamp = [(b"x-relay-region", self.region), (b"x-request-id", request_id)]

        async def stamped(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *stamp]
            await send(message)

        path: str = scope["path"]
        if path in OPEN_PATHS:
            await self.app(scope, receive, stamped)
            return
        target = scope.get("raw_path", path.encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        signature, body = _h(headers, SIGNATURE), _h(headers, BODY)
        try:
            actor = verify(
                self.secret, scope["method"], target,
                _h(headers, TIMESTAMP), _h(headers, ACTOR), signature,
                nonce=_h(headers, NONCE), body=body,
            )
            if not await self.nonces.first_use(str(_h(headers, NONCE))):
                raise SignatureError("replayed request")
        except SignatureError as exc:
            await _send_problem(stamped, Problem(401, f"cells answer only the router: {exc}"), path)
            return
        scope.setdefault("state", {})["actor"] = actor
        assert signature is not None and body is not None
        check = BodyCheck(self.secret, signature, body)
        if check.streamed:
            scope["headers"] = _without_trailer(scope["headers"])
        refused: list[SignatureError] = []
        answered = False

        async def checked() -> MutableMapping[str, Any]:
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] != "http.request":
                return message
            message["body"] = check.feed(message.get("body", b""))
            if not message.get("more_body"):
                try:
                    check.finish()
                except SignatureError as exc:
                    refused.append(exc)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: MutableMapping[str, Any]) -> None:
            nonlocal answered
            if refused:  # whatever the app says about a body that failed its check, the caller hears 401
                return
            answered = True
            await stamped(message)

        try:
            await self.app(scope, checked, guarded)
        except Exception:
            if not refused:
                raise
        if refused and not answered:
            await _send_problem(stamped, Problem(401, f"cells answer only the router: {refused[0]}"), path)


def _without_trailer(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The request's headers as the app must see them: Content-Length without the hop's trailer."""
    out = []
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            value = str(max(int(value) - TRAILER_LEN, 0)).encode()
        out.append((name, value))
    return out


def _h(headers: dict[bytes, bytes], name: str) -> str | None:
    value = headers.get(name.encode())
    return value.decode("latin-1") if value is not None else None


async def _send_problem(send: Send, problem: Problem, path: str) -> None:
    body = encode(problem, path)
    await send({"type": "http.response.start", "status": problem.status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@dataclass(slots=True)
class _CachedKey:
    key_id: uuid.UUID
    project_id: uuid.UUID
    key_hash: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    checked_at: float


class KeyVerifier:
    """Verifies full API keys against the cell's api_keys rows.

    bcrypt is paid once per key per process; afterwards the key's row is re-read at
    most every `recheck` seconds (a cheap indexed lookup, no bcrypt) so a revocation
    or expiry takes effect within that bound in every process, with no cache to flush.
    """

    def __init__(self, pool: asyncpg.Pool, *, recheck: float, region: str, regions: dict[str, str]) -> None:
        self.pool = pool
        self.recheck = recheck
        self.region = region
        self.tag_regions = {tag: name for name, tag in regions.items()}
        self._cache: dict[str, _CachedKey] = {}
        self._inflight: dict[str, asyncio.Future[_CachedKey | None]] = {}

    async def verify(self, key: str) -> _CachedKey:
        """The key's record, or a 401/421 problem."""
        prefix = key_prefix(key)
        if prefix is None:
            raise Problem(401, "malformed API key")
        digest = fingerprint(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached.checked_at < self.recheck:
            return self._usable(cached)
        waiter = self._inflight.get(digest)
        if waiter is not None:  # one lookup (and at most one bcrypt) per key at a time
            found = await asyncio.shield(waiter)
        else:
            future: asyncio.Future[_CachedKey | None] = asyncio.get_running_loop().create_future()
            self._inflight[digest] = future
            try:
                found = await self._load(key, prefix, cached)
                future.set_result(found)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # mark retrieved
                raise
            finally:
                del self._inflight[digest]
        if found is None:
            self._cache.pop(digest, None)
            other = self.tag_regions.get(key_tag(prefix))
            if other is not None and other != self.region and cached is None:
                raise Problem(421, "this key's project is homed in another region", region=other)
            raise Problem(401, "invalid or revoked API key")
        self._cache[digest] = found
        return self._usable(found)

    def _usable(self, k: _CachedKey) -> _CachedKey:
        if k.expires_at is not None and k.expires_at <= datetime.now(UTC):
            raise Problem(401, "API key expired")
        return k

    async def _load(self, key: str, prefix: str, cached: _CachedKey | None) -> _CachedKey | None:
        row = await self.pool.fetchrow(
            "SELECT id, project_id, key_hash, scopes, expires_at FROM api_keys"
            " WHERE key_prefix = $1 AND revoked_at IS NULL",
            prefix,
        )
        if row is None:
            return None
        if cached is None or cached.key_hash != row["key_hash"]:
            ok = await asyncio.to_thread(bcrypt.checkpw, key.encode(), row["key_hash"].encode())
            if not ok:
                return None
        return _CachedKey(row["id"], row["project_id"], row["key_hash"], tuple(row["scopes"]),
                          row["expires_at"], time.monotonic())

    def forget(self, key_id: uuid.UUID) -> None:
        """Drop a key from this process's cache at once (its own revocations)."""
        for digest, entry in list(self._cache.items()):
            if entry.key_id == key_id:
                del self._cache[digest]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a project stands in this cell: its move state (`absent` when unknown here) and routing epoch."""

    state: str
    epoch: int
    region: str | None
    """The region it moved to, for state `moved`."""


class Authenticator:
    """Turns a signed request into a Principal."""

    def __init__(self, pool: asyncpg.Pool, keys: KeyVerifier) -> None:
        self.pool = pool
        self.keys = keys
        self._placements: dict[uuid.UUID, tuple[Placement, float]] = {}

    async def principal(self, scope: Scope, project_id: uuid.UUID | None) -> Principal:
        """The caller of this request; `project_id` is the project named in the path, if any."""
        actor: Actor | None = scope.get("state", {}).get("actor")
        if actor is None:
            raise Problem(401, "request is not signed by the router")
        if actor.kind == "key":
            key = _presented_key(scope)
            if key is None or actor.key_prefix is None or not key.startswith(actor.key_prefix):
                raise Problem(401, "missing or mismatched API key")
            write = scope["method"] in WRITES
            try:
                record = await self.keys.verify(key)
            except Problem as problem:  # the key left with its project: say where it went
                if problem.status == 401 and actor.project_id is not None:
                    place = await self.placement(uuid.UUID(actor.project_id))
                    if place.state == "moved":
                        raise Problem(421, f"this project moved to {place.region}", region=place.region) from None
                raise
            await self.ensure_homed(record.project_id, epoch=actor.epoch, write=write)
            scopes = set(record.scopes)
            level = max((SCOPE_LEVEL.get(s, 0) for s in scopes), default=0)
            return Principal(record.project_id, level, "ingest" in scopes, "api", key[:12], actor.ip)
        if actor.kind == "admin":
            if actor.project_id is None or actor.user_id is None or actor.role not in ROLE_LEVEL:
                raise Problem(401, "incomplete admin assertion")
            pid = uuid.UUID(actor.project_id)
            if project_id is not None and pid != project_id:
                raise Problem(404, "no such project")
            await self.ensure_homed(pid, epoch=actor.epoch, write=scope["method"] in WRITES)
            return Principal(pid, ROLE_LEVEL[actor.role], False, "admin", actor.user_id, actor.ip)
        if actor.kind == "public":
            raise Problem(401, "this endpoint needs credentials")
        if project_id is None or not scope["path"].startswith("/internal/"):
            raise Problem(403, "the router acts as itself only on internal endpoints")
        await self.ensure_homed(project_id, write=scope["method"] in WRITES)
        return Principal(project_id, OWNER, False, "system", "router", None)

    async def public_project(self, scope: Scope, project_id: uuid.UUID) -> uuid.UUID:
        """For `/v1/hooks/{project_id}/…`: the project the router routed an unauthenticated call to.

        The handler must then authenticate the caller itself (a provider's webhook signature).
        """
        actor: Actor | None = scope.get("state", {}).get("actor")
        if actor is None or actor.kind != "public" or actor.project_id != str(project_id):
            raise Problem(404, "no such project")
        await self.ensure_homed(project_id, epoch=actor.epoch, write=scope["method"] in WRITES)
        return project_id

    async def ensure_homed(self, project_id: uuid.UUID, *, epoch: int | None = None, write: bool = False) -> None:
        """421 unless this cell serves the project to a router with a current map; 503 for writes in a fence.

        421 (with the new region) once the project moved away; 421 for an epoch older than this cell's, so
        a router that missed a move's fence or flip can never write here; 503 with Retry-After for writes
        while a move is fencing the project (reads are still served).
        """
        place = await self.placement(project_id)
        if place.state == "moved":
            raise Problem(421, f"this project moved to {place.region}", region=place.region)
        if place.state in ("absent", "importing"):
            raise Problem(421, "this project is not homed in this region")
        if epoch is not None and epoch < place.epoch:
            raise Problem(421, "the router's routing epoch for this project is stale", region=self.keys.region)
        if write and place.state in ("fencing", "fenced"):
            raise Problem(503, "this project is moving to another region; retry in a moment", retry_after=2)

    async def placement(self, project_id: uuid.UUID, *, fresh: bool = False) -> Placement:
        """The project's placement, trusted for PLACEMENT_TTL seconds unless `fresh`."""
        now = time.monotonic()
        cached = self._placements.get(project_id)
        if cached is not None and not fresh and now - cached[1] < PLACEMENT_TTL:
            return cached[0]
        row = await self.pool.fetchrow(
            """SELECT p.state, coalesce(p.epoch, m.epoch) AS epoch,
                      CASE WHEN p.state IS NULL OR p.state = 'moved' THEN m.region END AS region
                 FROM (SELECT $1::uuid AS id) x
                 LEFT JOIN projects p ON p.id = x.id
                 LEFT JOIN moved_projects m ON m.project_id = x.id""", project_id)
        assert row is not None
        if row["state"] is None:
            state = "moved" if row["region"] is not None else "absent"
        else:
            state = "moved" if row["state"] == "moved" and row["region"] is not None else row["state"]
        place = Placement(state, row["epoch"] or 0, row["region"])
        if state != "absent":  # a project being provisioned is not refused for longer than its own lookup
            if len(self._placements) > 100_000:  # bounded: one entry per project this process serves
                self._placements.clear()
            self._placements[project_id] = (place, now)
        return place


def _presented_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer(value.decode("latin-1"))
    if scope["path"].startswith("/v1/ingest/") and scope.get("query_string"):
        keys = parse_qs(scope["query_string"].decode("latin-1")).get("key")
        if keys:
            return str(keys[0])
    return None
