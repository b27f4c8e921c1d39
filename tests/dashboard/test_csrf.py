"""The dashboard's session and CSRF plumbing as plain functions: the token is bound to the session, the
cookie and form parsers find only what they should, and the `/app/` gate refuses an unsafe request without
the right token before anything reads it."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from common.problems import Problem
from common.web import cookie, csrf_token, form_token, same_token
from router.dashboard import gate


def test_the_token_is_bound_to_its_session() -> None:
    a, b = csrf_token("rs_one"), csrf_token("rs_two")
    assert a == csrf_token("rs_one") and a != b and len(a) == 64
    assert same_token(a, a) and not same_token(a, b)
    assert not same_token(a, None) and not same_token(None, None) and not same_token("", "")


def test_cookie_and_form_parsing() -> None:
    headers = [(b"cookie", b"other=1; relay_session=rs_abc; x=relay_session=rs_evil")]
    assert cookie(headers, "relay_session") == "rs_abc"
    assert cookie(headers, "relay_csrf") is None
    assert form_token(b"status=closed&csrf=t0k", "application/x-www-form-urlencoded") == "t0k"
    assert form_token(b'{"csrf": "t0k"}', "application/json") is None


def _scope(method: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": "/app/projects/x/", "headers": headers}


def _body(data: bytes) -> Any:
    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    return receive


def test_the_gate() -> None:
    token = "rs_session"
    session = (b"cookie", f"relay_session={token}".encode())
    form = (b"content-type", b"application/x-www-form-urlencoded")

    async def run() -> None:
        # A GET passes; the cookie becomes the bearer, a client's own Authorization is dropped.
        scope, _ = await gate.admit(_scope("GET", [session, (b"authorization", b"Bearer rk_x")]), _body(b""))
        assert [v for k, v in scope["headers"] if k == b"authorization"] == [f"Bearer {token}".encode()]
        # A POST with the session's token passes and its body is still readable downstream.
        body = f"csrf={csrf_token(token)}&status=closed".encode()
        scope, receive = await gate.admit(_scope("POST", [session, form]), _body(body))
        assert (await receive())["body"] == body
        # The header form (htmx) passes too.
        await gate.admit(_scope("POST", [session, (b"x-csrf-token", csrf_token(token).encode())]), _body(b""))
        # Without it, or with another session's, it is refused.
        for bad in (b"status=closed", f"csrf={csrf_token('rs_other')}".encode()):
            with pytest.raises(Problem) as refused:
                await gate.admit(_scope("POST", [session, form]), _body(bad))
            assert refused.value.status == 403
        # Before sign-in, the double-submit cookie must match the form.
        pre = (b"cookie", b"relay_csrf=abc123")
        await gate.admit(_scope("POST", [pre, form]), _body(b"csrf=abc123&email=a"))
        with pytest.raises(Problem):
            await gate.admit(_scope("POST", [pre, form]), _body(b"csrf=zzz&email=a"))
        with pytest.raises(Problem):
            await gate.admit(_scope("POST", [form]), _body(b"csrf=&email=a"))

    asyncio.run(run())
