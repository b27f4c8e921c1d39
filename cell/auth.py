"""Who is calling a cell, and what they may do — checked in one place.

Every request reaches a cell through the router, signed (see `common.signing`),
with a body that matches the signature and a nonce never seen before.
The signature proves the router sent it and carries the actor: an API key (which
the router verified already and the cell verifies again in full against its own
keyed digest, then caches by SHA-256 of the key for `key_recheck_seconds`), or a
dashboard admin whose membership and role the router checked. Handlers then ask for a scope level and a project with
`require` and get a 401/403/404/421 problem when the caller falls short.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import bcrypt
from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.access import ADMIN as ADMIN
from common.access import LEVEL_NAME, ROLE_LEVEL, scope_level
from common.access import OWNER as OWNER
from common.access import READ as READ
from common.access import WRITE as WRITE
from common.keys import digest, fingerprint, key_prefix, key_tag, matches, presented
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

log = logging.getLogger("relay.cell.auth")
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
        raise Problem(403, f"this needs the {LEVEL_NAME[level]} scope or role")
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
    stored: str
    """What the row held when this key was checked against it: its digest, or (before the upgrade) its
    bcrypt hash."""
    scopes: tuple[str, ...]
    expires_at: datetime | None
    checked_at: float


class KeyVerifier:
    """Verifies full API keys against the cell's api_keys rows: HMAC-SHA256 under the key pepper
    (`common.keys.digest`), compared in constant time.

    A key from before digests still has only its bcrypt hash: bcrypt is paid once, and on success the row
    gets the digest and loses the hash, so the key never costs bcrypt again. The key's row is re-read at
    most every `recheck` seconds (a cheap indexed lookup) so a revocation or expiry takes effect within that
    bound in every process, with no cache to flush; a refused key is remembered as long, so repeating a
    wrong secret costs nothing.
    """

    def __init__(self, pool: asyncpg.Pool, *, recheck: float, region: str, regions: dict[str, str],
                 pepper: bytes, on_use: Callable[[uuid.UUID], None] | None = None) -> None:
        self.pool = pool
        self.on_use = on_use
        """Told the id of every key that authenticates a request (cell.keys.usage writes `last_used_at`)."""
        self.recheck = recheck
        self.region = region
        self.pepper = pepper
        self.tag_regions = {tag: name for name, tag in regions.items()}
        self._cache: dict[str, _CachedKey] = {}
        self._refused: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Future[_CachedKey | None]] = {}

    async def verify(self, key: str) -> _CachedKey:
        """The key's record, or a 401/421 problem."""
        prefix = key_prefix(key)
        if prefix is None:
            raise Problem(401, "malformed API key")
        mark = fingerprint(key)
        now = time.monotonic()
        cached = self._cache.get(mark)
        if cached is not None and now - cached.checked_at < self.recheck:
            return self._usable(cached)
        refused = self._refused.get(mark)
        if refused is not None and now - refused < self.recheck:
            raise Problem(401, "invalid or revoked API key")
        waiter = self._inflight.get(mark)
        if waiter is not None:  # one lookup (and at most one bcrypt) per key at a time
            found = await asyncio.shield(waiter)
        else:
            future: asyncio.Future[_CachedKey | None] = asyncio.get_running_loop().create_future()
            self._inflight[mark] = future
            try:
                found = await self._load(key, prefix, cached)
                future.set_result(found)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # mark retrieved
                raise
            finally:
                del self._inflight[mark]
        if found is None:
            self._cache.pop(mark, None)
            if len(self._refused) > 100_000:  # bounded: guessing must not grow memory
                self._refused.clear()
            self._refused[mark] = time.monotonic()
            other = self.tag_regions.get(key_tag(prefix))
            if other is not None and other != self.region and cached is None:
                raise Problem(421, "this key's project is homed in another region", region=other)
            raise Problem(401, "invalid or revoked API key")
        self._refused.pop(mark, None)
        self._cache[mark] = found
        return self._usable(found)

    def _usable(self, k: _CachedKey) -> _CachedKey:
        if k.expires_at is not None and k.expires_at <= datetime.now(UTC):
            raise Problem(401, "API key expired")
        if self.on_use is not None:
            self.on_use(k.key_id)
        return k

    async def _load(self, key: str, prefix: str, cached: _CachedKey | None) -> _CachedKey | None:
        row = await self.pool.fetchrow(
            "SELECT id, project_id, key_digest, key_hash, scopes, expires_at FROM api_keys"
            " WHERE key_prefix = $1 AND revoked_at IS NULL",
            prefix,
        )
        if row is None:
            return None
        stored: str = row["key_digest"] or row["key_hash"]
        if row["key_digest"] is not None:
            if not matches(self.pepper, key, row["key_digest"]):
                return None
        elif cached is None or cached.stored != stored:
            ok = await asyncio.to_thread(bcrypt.checkpw, key.encode(), row["key_hash"].encode())
            if not ok:
                return None
            stored = await self._upgrade(row["id"], key) or stored
        return _CachedKey(row["id"], row["project_id"], stored, tuple(row["scopes"]), row["expires_at"],
                          time.monotonic())

    async def _upgrade(self, key_id: uuid.UUID, key: str) -> str | None:
        """Replace a bcrypt hash the key just passed with the key's digest; None when it could not be written
        now (a move's fence, a database hiccup): the next successful use tries again."""
        value = digest(self.pepper, key)
        try:
            await self.pool.execute(
                "UPDATE api_keys SET key_digest = $2, key_hash = NULL WHERE id = $1 AND key_digest IS NULL",
                key_id, value)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("key digest not recorded yet (%s)", type(exc).__name__)
            return None
        return value

    def forget(self, key_id: uuid.UUID) -> None:
        """Drop a key from this process's cache at once (its own revocations)."""
        for mark, entry in list(self._cache.items()):
            if entry.key_id == key_id:
                del self._cache[mark]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a project stands in this cell: its move state (`absent` when unknown here) and routing epoch."""

    state: str
    epoch: int
    region: str | None
    """The region it moved to, for state `moved`."""
    origins: frozenset[str] = frozenset()
    """The origins whose pages may call ingest (`settings.allowed_origins`); empty: every origin."""


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
            await self.check_origin(scope, record.project_id)
            return Principal(record.project_id, scope_level(record.scopes), "ingest" in record.scopes, "api",
                             key[:12], actor.ip)
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

    async def check_origin(self, scope: Scope, project_id: uuid.UUID) -> None:
        """403 for a browser on an origin the project did not allow (`settings.allowed_origins`) calling ingest;
        requests without `Origin` (servers, mobile apps) are not a browser's and pass. The router's CORS headers still
        go on the answer, so the page can read why."""
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        if origin is None or not scope["path"].startswith("/v1/ingest/"):
            return
        allowed = (await self.placement(project_id)).origins
        if allowed and origin.decode("latin-1") not in allowed:
            raise Problem(403, "this project does not accept requests from this origin (settings.allowed_origins)")

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
        if place.state == "deleting":  # its owner deleted it: nothing of it is served while it is erased
            raise Problem(404, "no such project")
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
                      CASE WHEN p.state IS NULL OR p.state = 'moved' THEN m.region END AS region,
                      p.settings -> 'allowed_origins' AS origins
                 FROM (SELECT $1::uuid AS id) x
                 LEFT JOIN projects p ON p.id = x.id
                 LEFT JOIN moved_projects m ON m.project_id = x.id""", project_id)
        assert row is not None
        if row["state"] is None:
            state = "moved" if row["region"] is not None else "absent"
        else:
            state = "moved" if row["state"] == "moved" and row["region"] is not None else row["state"]
        origins = row["origins"] if isinstance(row["origins"], list) else []
        place = Placement(state, row["epoch"] or 0, row["region"], frozenset(str(o) for o in origins))
        if state != "absent":  # a project being provisioned is not refused for longer than its own lookup
            if len(self._placements) > 100_000:  # bounded: one entry per project this process serves
                self._placements.clear()
            self._placements[project_id] = (place, now)
        return place


def _presented_key(scope: Scope) -> str | None:
    """The API key the request carries (`common.keys.presented`), None when it carries none or a token."""
    authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
    found = presented(authorization, scope.get("query_string"), ingest=scope["path"].startswith("/v1/ingest/"))
    return found.token if found is not None and found.kind == "key" else None
