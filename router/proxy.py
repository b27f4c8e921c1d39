"""The router's hot path: route a request by key prefix or project id and stream it to the cell.

This is a raw ASGI handler, not a Litestar route: every request of SDK traffic
passes here, and the framework's per-request work would cost a third of the
throughput. It verifies the presented key in full, prefix and secret, from the
in-memory directory before anything else (`router.access`), or the session for
dashboard callers, and reads the headers; bodies pass through in memory (JSON,
bounded) or as a stream (uploads) and are never written anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from common import metrics, signing, telemetry, web
from common.access import READ
from common.keys import Presented, presented
from common.problems import Problem, encode
from common.signing import Actor, sign
from common.telemetry import path_template
from router import access
from router.cells import Cell
from router.directory import KeyEntry
from router.moves import routing
from router.ratelimit import client_tag
from router.state import RouterState
from router.upstream import Response

log = logging.getLogger("relay.router.access")
tracer = trace.get_tracer("relay.router")


def route_template(path: str) -> str:
    """The path with ids (and any other value a client put in it) replaced by `{id}`: what logs and spans
    may carry of a URL (see `common.telemetry.path_template`)."""
    return path_template(path)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MiB = 1024 * 1024
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"trailers", b"transfer-encoding", b"upgrade", b"host", b"proxy-connection",
})
# Headers a client must never be able to set on the internal hop (the trace context is the router's own).
INTERNAL = frozenset({*(h.encode() for h in signing.HEADERS), b"traceparent", b"tracestate", b"baggage"})
# What `_forward` leaves out of a client's headers, as one set: one lookup a header.
_NOT_FORWARDED = HOP_BY_HOP | INTERNAL | {b"x-request-id"}

# Per-request metrics: plain counters updated in place (see common.metrics), no locks on this path.
REQUESTS = metrics.timings(
    count="relay.router.requests", duration="relay.router.request.duration", errors="relay.router.request.errors",
    labels=("relay.region", "relay.route_class", "http.request.method", "http.response.status_code"),
    description="Requests the router answered, per region and route class", failed=metrics.server_error(3))
GLOBAL = metrics.GLOBAL


def record(started: float, region: str, route: str, method: str, status: int, project: str | None) -> None:
    """Count one answered request (region `global` when it never reached a cell).

    `project` is not a label: the router sits in front of every region, and its metrics name no project
    (per-project counts are the cells' own, in their region).
    """
    REQUESTS.record((region, route, method, status), metrics.clock() - started)


@dataclass(frozen=True, slots=True)
class RouteClass:
    """Timeout and body limit of a kind of request."""

    name: str
    timeout: float
    max_body: int
    stream: bool


INGEST = RouteClass("ingest", 10.0, 1 * MiB, stream=False)
MANAGEMENT = RouteClass("management", 30.0, 1 * MiB, stream=False)
MEDIA = RouteClass("uploads", 120.0, 25 * MiB, stream=True)
CHUNKS = RouteClass("uploads", 60.0, 5 * MiB, stream=True)
DOWNLOAD = RouteClass("uploads", 120.0, 1 * MiB, stream=False)


def ingest_class(path: str) -> RouteClass:
    """Uploads stream with their own limits; the rest of ingest is bounded JSON."""
    if path.endswith("/media"):
        return MEDIA
    if "/chunks/" in path:
        return CHUNKS
    return INGEST


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class Proxy:
    """Forwards one request to its cell and streams the answer back."""

    def __init__(self, state: Callable[[], RouterState]) -> None:
        self._state = state

    async def ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`/v1/ingest/…`: the key verified in full (prefix and secret, from the directory), routed by its project."""
        started = metrics.clock()
        rid = request_id(scope)
        region: str = GLOBAL  # what the metrics will say, as far as the request got
        project: str | None = None
        route, status = INGEST, 500
        try:
            state = self._state()
            ip = access.client_ip(state, scope)
            entry = await self._key_entry(state, _credential(scope, ingest=True), ip)
            access.require_scope(entry, ingest=True)
            route = ingest_class(scope["path"])
            region, project = entry.region, str(entry.project_id)
            _refuse_deleted(state, entry.project_id)
            state.limiter.admit(route.name, entry.key_prefix)
            actor = Actor(kind="key", project_id=project, key_prefix=entry.key_prefix, ip=ip,
                          epoch=_epoch(state, entry.project_id))
            status = await self._forward(scope, receive, send, state.cells[entry.region], actor, route, rid)
            await _count_refusal(state, status, ip)
        except Problem as problem:
            status = problem.status
            await send_problem(send, problem, scope["path"], rid)
        finally:
            record(started, region, route.name, scope["method"], status, project)

    async def management(self, scope: Scope, receive: Receive, send: Send, project: str) -> None:
        """`/v1/projects/{id}/…` resources that live in the project's cell."""
        started = metrics.clock()
        rid = request_id(scope)
        region: str = GLOBAL  # what the metrics will say, as far as the request got
        known: str | None = None
        route, status = MANAGEMENT, 500
        try:
            state = self._state()
            try:
                project_id = uuid.UUID(project)
            except ValueError:
                raise Problem(404, "no such project") from None
            home = state.directory.projects.get(project_id)
            if home is not None:  # only real projects become labels: a client cannot invent series
                region, known = home.region, str(project_id)
            ip = access.client_ip(state, scope)
            credential = _credential(scope, ingest=False)
            if credential is None:
                raise Problem(401, "send an admin session token or an API key as Authorization: Bearer")
            if credential.kind == "session":
                try:
                    session = await access.session(state, credential.token, project_id, ip)
                except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                    raise Problem(503, "sessions are unavailable; API keys keep working", retry_after=5) from exc
                if session.role is None or home is None:
                    raise Problem(404, "no such project")
                actor = Actor(kind="admin", project_id=str(project_id), user_id=str(session.user_id),
                              role=session.role, ip=ip, epoch=home.epoch)
                identity = f"user:{session.user_id}"
            else:
                entry = await self._key_entry(state, credential, ip)
                if home is None or entry.project_id != project_id:
                    raise Problem(404, "no such project")
                access.require_scope(entry, READ)  # an ingest key reads nothing of a project
                actor = Actor(kind="key", project_id=project, key_prefix=entry.key_prefix, ip=ip, epoch=home.epoch)
                identity = entry.key_prefix
            _refuse_deleted(state, project_id)
            route = DOWNLOAD if scope["path"].endswith("/content") else MANAGEMENT
            state.limiter.admit(route.name, identity)
            status = await self._forward(scope, receive, send, state.cells[home.region], actor, route, rid)
            if actor.kind == "key":
                await _count_refusal(state, status, ip)
        except Problem as problem:
            status = problem.status
            await send_problem(send, problem, scope["path"], rid)
        finally:
            record(started, region, route.name, scope["method"], status, known)

    async def page(self, scope: Scope, receive: Receive, send: Send, project: str) -> None:
        """`/app/projects/{id}/…`: a dashboard page, forwarded like a management call and rendered by the
        project's cell. The session comes from the cookie (router.dashboard.gate made it the bearer and
        checked CSRF); only that session's user, role and CSRF token cross the hop, never the cookie."""
        started = metrics.clock()
        rid = request_id(scope)
        region: str = GLOBAL
        known: str | None = None
        route, status = MANAGEMENT, 500
        try:
            state = self._state()
            credential = _credential(scope, ingest=False)
            token = credential.token if credential is not None and credential.kind == "session" else None
            if token is None:
                if scope["method"] != "GET":
                    raise Problem(401, "sign in first")
                status = 303
                back = b"/app/?next=" + quote(scope["path"], safe="/").encode()
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", back), (b"x-request-id", rid), (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
            try:
                project_id = uuid.UUID(project)
            except ValueError:
                raise Problem(404, "no such project") from None
            home = state.directory.projects.get(project_id)
            ip = access.client_ip(state, scope)
            try:
                session = await access.session(state, token, project_id, ip)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                raise Problem(503, "sessions are unavailable for now", retry_after=5) from exc
            if session.role is None or home is None:
                raise Problem(404, "no such project")
            _refuse_deleted(state, project_id)
            region, known = home.region, str(project_id)
            actor = Actor(kind="admin", project_id=str(project_id), user_id=str(session.user_id),
                          role=session.role, ip=ip, epoch=home.epoch, csrf=web.csrf_token(token))
            route = DOWNLOAD if scope["path"].endswith("/content") else MANAGEMENT
            state.limiter.admit(route.name, f"user:{session.user_id}")
            headers = [(k, v) for k, v in scope["headers"] if k not in (b"authorization", b"cookie")]
            status = await self._forward({**scope, "headers": headers}, receive, send, state.cells[home.region],
                                         actor, route, rid)
        except Problem as problem:
            status = problem.status
            accept = _header(scope, b"accept")
            if not web.wants_html(accept.decode("latin-1") if accept else None):
                await send_problem(send, problem, scope["path"], rid)
                return
            body = web.problem_page(problem.status, problem.title, problem.detail)
            await send({"type": "http.response.start", "status": problem.status, "headers": [
                (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid), *((k.lower().encode(), v.encode()) for k, v in problem.headers.items()),
                *((k.lower().encode(), v.encode()) for k, v in web.SECURITY_HEADERS.items())]})
            await send({"type": "http.response.body", "body": body})
        finally:
            record(started, region, "dashboard", scope["method"], status, known)

    async def hooks(self, scope: Scope, receive: Receive, send: Send, project: str) -> None:
        """`/v1/hooks/{project_id}/…`: providers' inbound webhooks, routed by project id, unauthenticated here.

        The cell verifies each provider's own signature; the router only finds the region and rate-limits.
        """
        started = metrics.clock()
        rid = request_id(scope)
        region: str = GLOBAL  # what the metrics will say, as far as the request got
        known: str | None = None
        status = 500
        try:
            state = self._state()
            try:
                project_id = uuid.UUID(project)
            except ValueError:
                raise Problem(404, "no such project") from None
            home = state.directory.projects.get(project_id)
            if home is None:
                raise Problem(404, "no such project")
            region, known = home.region, str(project_id)
            state.limiter.admit("management", f"hooks:{project_id}")
            actor = Actor(kind="public", project_id=str(project_id), ip=access.client_ip(state, scope),
                          epoch=home.epoch)
            status = await self._forward(scope, receive, send, state.cells[home.region], actor, MANAGEMENT, rid)
        except Problem as problem:
            status = problem.status
            await send_problem(send, problem, scope["path"], rid)
        finally:
            record(started, region, "hooks", scope["method"], status, known)

    async def _key_entry(self, state: RouterState, credential: Presented | None, ip: str | None) -> KeyEntry:
        """The directory entry of a presented key, verified in full (prefix and secret) by `router.access`
        before anything else; bad keys are counted per client (429 past the limit)."""
        if credential is None or credential.kind != "key":
            raise Problem(401, "send an API key as Authorization: Bearer <key>")
        return await access.verify_key(state, credential, ip)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, cell: Cell, actor: Actor,
                       route: RouteClass, rid: bytes) -> int:
        method: str = scope["method"]
        target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers: dict[str, str] = {}
        declared: int | None = None
        for name, value in scope["headers"]:
            if name in _NOT_FORWARDED:
                continue
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise Problem(400, "bad Content-Length") from None
            headers[name.decode("latin-1")] = value.decode("latin-1")
        if declared is not None and declared > route.max_body:
            raise Problem(413, f"body larger than {route.max_body} bytes")
        headers["x-request-id"] = rid.decode()
        # The signature binds the body: a buffered one by its digest, a streamed one by a trailer the router
        # appends as the last bytes pass (see common.signing).
        body: bytes | AsyncIterator[bytes] | None
        if route.stream:
            headers.update(sign(cell.secret, method, target, actor, body=None))
            if declared is not None:
                headers["content-length"] = str(declared + signing.TRAILER_LEN)
            body = signing.signed_stream(cell.secret, headers, _stream(receive, route.max_body))
        else:
            body = await read_body(receive, route.max_body)
            headers.update(sign(cell.secret, method, target, actor, body=body))
        traced = telemetry.tracing()
        # What the span and the access line say; neither enabled (no exporter, level above INFO), nothing to build.
        attributes = {"http.request.method": method, "http.route": route_template(scope["path"]),
                      "relay.region": cell.region, "relay.route_class": route.name,
                      "relay.project_id": actor.project_id or "", "relay.key_prefix": actor.key_prefix or ""
                      } if traced or log.isEnabledFor(logging.INFO) else None
        if traced and attributes is not None:
            with tracer.start_as_current_span("router.forward", kind=SpanKind.CLIENT, attributes=attributes) as span:
                propagate.inject(headers)
                status = await self._relay(send, cell, method, target, headers, body, route, attributes)
                span.set_attribute("http.response.status_code", status)
        else:  # no exporter: a no-op span and an empty injection would cost ~15 µs a request for nothing
            status = await self._relay(send, cell, method, target, headers, body, route, attributes)
        if status == 421 and actor.project_id:  # the project moved, or this router's map is stale
            await routing.reload(self._state(), uuid.UUID(actor.project_id))
        return status

    async def _relay(self, send: Send, cell: Cell, method: str, target: str, headers: dict[str, str],
                     body: bytes | AsyncIterator[bytes] | None, route: RouteClass,
                     attributes: dict[str, str] | None) -> int:
        """Send the request to the cell and stream its answer back; returns the status relayed (and writes the
        access line when `attributes` are given). The route's timeout bounds the whole exchange."""
        probe = cell.admit()
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + route.timeout
        response: Response | None = None
        status = 499  # the client went away before an answer
        try:
            try:
                async with asyncio.timeout_at(deadline):  # the target goes out byte for byte as signed
                    response = await cell.pool.request(method, target, headers, body)
            except _TooLarge:
                raise Problem(413, f"body larger than {route.max_body} bytes") from None
            except _ClientGone:
                return status
            except (TimeoutError, OSError) as exc:  # refused, reset, closed, TLS refused, or no answer in time
                probe = False  # resolved: the failure re-opens the breaker
                cell.breaker.failure()
                raise Problem(503, f"region {cell.region} did not answer", retry_after=2,
                              region=cell.region) from exc
            probe = False  # resolved: the success closes the breaker
            cell.breaker.success()
            status = response.status
            out = [(k, v) for k, v in response.headers if k not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": status, "headers": out})
            # With a Content-Length the chunk that completes it is the last (more_body=False): a small answer, the
            # usual JSON, is one body message rather than two through the CORS wrapper and the server.
            left, more = response.content_length, True
            async with asyncio.timeout_at(deadline):
                async for chunk in response.chunks():
                    if left is not None:
                        left -= len(chunk)
                        more = left > 0
                    await send({"type": "http.response.body", "body": chunk, "more_body": more})
                    if not more:
                        break
            if more:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return status
        except Problem as problem:
            status = problem.status
            raise
        finally:
            if attributes is not None and log.isEnabledFor(logging.INFO):  # fields built only when written
                log.info("request", extra={**attributes, "http.response.status_code": status,
                                           "duration_ms": round((time.monotonic() - started) * 1000, 2)})
            cell.release(probe)
            if response is not None:
                response.close()  # back to the pool when read to its end, else closed: the pool never leaks


async def read_body(receive: Receive, limit: int) -> bytes:
    """A whole request body, at most `limit` bytes (413 past it, 400 when the client goes away)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Problem(400, "client disconnected")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise Problem(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _stream(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise _TooLarge
        if chunk:
            yield chunk
        if not message.get("more_body"):
            return


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def request_id(scope: Scope) -> bytes:
    """The caller's X-Request-Id when it is sane, else a new one."""
    given = _header(scope, b"x-request-id")
    if given and len(given) <= 128 and given.isascii():
        return given
    return uuid.uuid4().hex.encode()


def _credential(scope: Scope, *, ingest: bool) -> Presented | None:
    """What the request presents (`common.keys.presented`: the header, or `?key=` on ingest paths)."""
    value = _header(scope, b"authorization")
    return presented(value.decode("latin-1") if value is not None else None, scope.get("query_string"),
                     ingest=ingest)


async def _count_refusal(state: RouterState, status: int, ip: str | None) -> None:
    """A cell's 401 for a key the router let through (revoked or expired there first) counts as a bad
    credential of the client too; the answer is already relayed, so this only counts."""
    if status == 401:
        await state.limiter.hit("bad_credentials", client_tag(ip))


def _refuse_deleted(state: RouterState, project_id: uuid.UUID) -> None:
    """A project its owner deleted is fenced here at once (router/projects/lifecycle.py): 404 while it is erased."""
    home = state.directory.projects.get(project_id)
    if home is not None and home.state == "deleting":
        raise Problem(404, "no such project")


def _epoch(state: RouterState, project_id: uuid.UUID) -> int | None:
    """The project's routing epoch in this router's directory, sent to the cell in the actor."""
    home = state.directory.projects.get(project_id)
    return home.epoch if home is not None else None


async def send_problem(send: Send, problem: Problem, path: str, rid: bytes) -> None:
    """Answer with a problem document from outside Litestar."""
    body = encode(problem, path)
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", rid)]
    headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
