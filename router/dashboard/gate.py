"""The door of `/app/…`: the session cookie becomes the request's bearer token, and CSRF is checked.

Every dashboard request passes here before the router's pages or the page proxy see it. A browser's
session rides on a cookie, which the browser attaches to forged cross-site requests too; so every unsafe
request must also carry the session's CSRF token (form field `csrf`, or the `X-CSRF-Token` header htmx
sends), else it is refused with 403 before anything acts on it. Before sign-in the same check holds
against a random double-submit cookie. An `Authorization` header a client sent is ignored on `/app/`:
the dashboard is cookie-only, so a token can never be smuggled past the CSRF check.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from common.problems import Problem
from common.web import (
    CSRF_HEADER,
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    UNSAFE_METHODS,
    cookie,
    csrf_token,
    form_token,
    same_token,
)
from router.proxy import Receive, Scope, read_body

MAX_FORM = 256 * 1024
"""Bytes of a dashboard form; none is near it (uploads go through the API)."""


async def admit(scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
    """The request as the dashboard handles it: bearer from the cookie, body replayable; 403 on bad CSRF."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
    token = cookie(headers, SESSION_COOKIE)
    if token is not None and token.startswith("rs_"):
        headers.append((b"authorization", f"Bearer {token}".encode("latin-1")))
    scope = {**scope, "headers": headers}
    if scope["method"] not in UNSAFE_METHODS:
        return scope, receive
    expected = csrf_token(token) if token else cookie(headers, PRE_SESSION_COOKIE)
    body = await read_body(receive, MAX_FORM)
    given = dict(headers).get(CSRF_HEADER)
    content_type = dict(headers).get(b"content-type", b"").decode("latin-1")
    sent = given.decode("latin-1") if given else form_token(body, content_type)
    if not same_token(expected, sent):
        raise Problem(403, "this form is stale or did not come from the dashboard; reload the page and retry")
    return scope, _replay(body, receive)


def _replay(body: bytes, receive_rest: Receive) -> Receive:
    """A receive channel that hands the already-read body over once, then passes on what the client sends
    (its disconnect)."""
    sent = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive_rest()

    return receive
