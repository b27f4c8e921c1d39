"""CORS at the global endpoint: which pages on other origins may call which paths, answered before any routing.

Browsers call the ingest paths from customers' pages on any origin, so `/v1/ingest/…` answers every preflight
and stamps every answer, problems included, with `Access-Control-Allow-Origin` and the headers a page needs to
read (request id, region, `Retry-After` for its backoff). No credentials ride on these calls: the ingest key is
the credential, sent in `Authorization`. A project may narrow its origins (`settings.allowed_origins`); only
its cell knows that setting and refuses the request there with a 403, which still carries these headers so the
page can read why. `/sdk/…` is public JavaScript. Every other path (management, control plane, dashboard) is
open across origins only to the origins the operator lists for a dashboard (`RELAY_DASHBOARD_ORIGINS`).

A raw ASGI piece like `router.proxy`: it wraps `send` and answers preflights, and knows nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from common.problems import Problem
from router.proxy import Scope, Send, request_id, send_problem

ALLOW_METHODS = b"GET, POST, DELETE"
ALLOW_HEADERS = b"authorization, content-type, content-encoding, x-relay-conversation-token, x-request-id"
EXPOSE_HEADERS = b"X-Request-Id, X-Relay-Region, Retry-After"
MAX_AGE = b"86400"
DASHBOARD_METHODS = b"GET, POST, PUT, PATCH, DELETE"
PUBLIC_PREFIXES = ("/v1/ingest/", "/sdk/")


def _origin(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"origin":
            return bytes(value)
    return None


def _is_preflight(scope: Scope) -> bool:
    return scope["method"] == "OPTIONS" and any(name == b"access-control-request-method"
                                                for name, _ in scope["headers"])


class Cors:
    """The CORS policy of the router: public paths for every origin, the rest for the dashboard's origins."""

    def __init__(self, dashboard_origins: Iterable[str]) -> None:
        self.dashboard = frozenset(o.encode() for o in dashboard_origins)

    def _headers(self, scope: Scope, origin: bytes | None) -> list[tuple[bytes, bytes]] | None:
        """The headers every answer to this request carries, or None when this origin gets none."""
        if scope["path"].startswith(PUBLIC_PREFIXES):
            allowed = origin or b"*"
            headers = [(b"access-control-allow-origin", allowed),
                       (b"access-control-expose-headers", EXPOSE_HEADERS)]
            return [*headers, (b"vary", b"Origin")] if origin else headers
        if origin is not None and origin in self.dashboard:
            return [(b"access-control-allow-origin", origin), (b"access-control-allow-credentials", b"true"),
                    (b"access-control-expose-headers", EXPOSE_HEADERS), (b"vary", b"Origin")]
        return None

    async def preflight(self, scope: Scope, send: Send) -> bool:
        """Answer a CORS preflight (True) or leave the request to the router (False).

        Public paths: 204 for every origin. Elsewhere: 204 for a dashboard origin, a 403 problem for any other
        (a preflight is never a real request, so nothing behind the router needs to see it).
        """
        if not _is_preflight(scope):
            return False
        origin = _origin(scope)
        headers = self._headers(scope, origin)
        if headers is None:
            await send_problem(send, Problem(403, "this origin may not call this path from a browser"),
                               scope["path"], request_id(scope))
            return True
        public = scope["path"].startswith(PUBLIC_PREFIXES)
        await send({"type": "http.response.start", "status": 204, "headers": [
            *headers,
            (b"access-control-allow-methods", ALLOW_METHODS if public else DASHBOARD_METHODS),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", MAX_AGE),
            (b"x-request-id", request_id(scope)),
        ]})
        await send({"type": "http.response.body", "body": b""})
        return True

    def stamp(self, scope: Scope, send: Send) -> Send:
        """`send`, adding this request's CORS headers to its answer (the same `send` when it gets none)."""
        headers = self._headers(scope, _origin(scope))
        if headers is None:
            return send

        async def stamped(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                given = message.get("headers", [])
                # The SDK files set their own `*`; an answer never carries the header twice.
                if not any(bytes(name).lower() == b"access-control-allow-origin" for name, _ in given):
                    message["headers"] = [*given, *headers]
            await send(message)

        return stamped
