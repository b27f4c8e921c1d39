"""Pure functions both planes rely on: key format, hop signing, problem pointers, settings, ids."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from common.ids import uuid7
from common.keys import KEY_RE, bearer, key_prefix, new_key, new_key_prefix
from common.netaddr import truncate_ip
from common.problems import pointer_of
from common.settings import SettingsError, load
from common.signing import (
    ACTOR,
    BODY,
    NONCE,
    SIGNATURE,
    STREAMED,
    TIMESTAMP,
    TRAILER_LEN,
    Actor,
    BodyCheck,
    SignatureError,
    digest,
    sign,
    signed_stream,
    verify,
)
from router.settings import RouterSettings


def test_key_format() -> None:
    prefix = new_key_prefix("eu")
    key = new_key(prefix)
    assert KEY_RE.match(key) and len(prefix) == 12 and key_prefix(key) == prefix
    assert key_prefix("rk_eu_abc_" + "x" * 32) is None
    assert key_prefix(key + "x") is None
    assert bearer("Bearer  abc ") == "abc" and bearer("Basic abc") is None and bearer(None) is None


def _verify(secret: bytes, method: str, target: str, h: dict[str, str], **changed: str | None) -> Actor:
    h = {**h, **changed}  # type: ignore[dict-item]
    return verify(secret, method, target, h.get(TIMESTAMP), h.get(ACTOR), h.get(SIGNATURE),
                  nonce=h.get(NONCE), body=h.get(BODY))


def test_signatures_bind_method_target_time_nonce_body_and_actor() -> None:
    secret = b"s" * 32
    actor = Actor(kind="admin", project_id=str(uuid.uuid4()), user_id="u", role="viewer")
    h = sign(secret, "GET", "/v1/projects/x/interactions?q=a", actor)
    assert _verify(secret, "GET", "/v1/projects/x/interactions?q=a", h) == actor
    for method, target in (("POST", "/v1/projects/x/interactions?q=a"), ("GET", "/v1/projects/x/interactions?q=b")):
        with pytest.raises(SignatureError):
            _verify(secret, method, target, h)
    with pytest.raises(SignatureError):
        _verify(b"t" * 32, "GET", "/v1/projects/x/interactions?q=a", h)
    forged = sign(secret, "GET", "/p", Actor(kind="admin", role="owner"))
    with pytest.raises(SignatureError):  # actor swapped under a valid signature
        _verify(secret, "GET", "/v1/projects/x/interactions?q=a", h, **{ACTOR: forged[ACTOR]})
    with pytest.raises(SignatureError):  # another nonce under the same signature
        _verify(secret, "GET", "/v1/projects/x/interactions?q=a", h, **{NONCE: forged[NONCE]})
    with pytest.raises(SignatureError):  # another body digest under the same signature
        _verify(secret, "GET", "/v1/projects/x/interactions?q=a", h, **{BODY: digest(b"{}")})
    old = sign(secret, "GET", "/p", actor, now=time.time() - 60)
    with pytest.raises(SignatureError, match="stale"):
        _verify(secret, "GET", "/p", old)
    with pytest.raises(SignatureError, match="not signed"):
        verify(secret, "GET", "/p", None, None, None)
    assert sign(secret, "GET", "/p", actor)[NONCE] != sign(secret, "GET", "/p", actor)[NONCE]


def test_a_buffered_body_must_match_its_digest() -> None:
    secret = b"s" * 32
    h = sign(secret, "POST", "/p", Actor(kind="router"), body=b'{"a":1}')
    ok = BodyCheck(secret, h[SIGNATURE], h[BODY])
    assert ok.feed(b'{"a":') + ok.feed(b"1}") == b'{"a":1}'
    ok.finish()
    swapped = BodyCheck(secret, h[SIGNATURE], h[BODY])
    swapped.feed(b'{"a":2}')
    with pytest.raises(SignatureError, match="does not match"):
        swapped.finish()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_streamed_body_carries_a_trailer_checked_as_it_streams() -> None:
    secret = b"s" * 32
    h = sign(secret, "POST", "/media", Actor(kind="router"), body=None)
    assert h[BODY] == STREAMED
    sent = [c async for c in signed_stream(secret, h, _chunks(b"hello ", b"world"))]
    assert len(sent[-1]) == TRAILER_LEN
    check = BodyCheck(secret, h[SIGNATURE], h[BODY])
    wire = b"".join(sent)
    passed = b"".join(check.feed(wire[i:i + 5]) for i in range(0, len(wire), 5))  # any chunking
    assert passed == b"hello world"
    check.finish()
    # Another body under the same headers and trailer; a truncated one; one under another request's trailer.
    other = sign(secret, "POST", "/media", Actor(kind="router"), body=None)
    for tampered, signature in ((b"HELLO world" + sent[-1], h[SIGNATURE]), (wire[:-1], h[SIGNATURE]),
                                (wire, other[SIGNATURE])):
        check = BodyCheck(secret, signature, STREAMED)
        check.feed(tampered)
        with pytest.raises(SignatureError):
            check.finish()


def test_pointers() -> None:
    assert pointer_of(".content.text") == "/content/text"
    assert pointer_of(".tags[3]") == "/tags/3"
    assert pointer_of("") == ""


def test_uuid7_is_time_ordered() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_ip_truncation() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:1234:5678::1") == "2001:db8:1234::"
    assert truncate_ip("nonsense") is None


def test_settings_fail_with_one_clear_line() -> None:
    good = {"RELAY_DATABASE_URL": "postgresql://x/y", "RELAY_REDIS_URL": "redis://x",
            "RELAY_CELLS": '{"eu-west": {"url": "http://c", "tag": "eu", "hop_secret": "0123456789abcdefXYZ"}}',
            "RELAY_KEY_PEPPER": "0123456789abcdef0123456789abcdef"}
    assert load(RouterSettings, good).cells["eu-west"].tag == "eu"
    with pytest.raises(SettingsError, match="RELAY_PORT"):
        load(RouterSettings, {**good, "RELAY_PORT": "eighty"})
    with pytest.raises(SettingsError, match="RELAY_CELLS"):
        load(RouterSettings, {**good, "RELAY_CELLS": "{nope"})
    with pytest.raises(SettingsError, match="hop_secret"):
        short = '{"eu-west": {"url": "http://c", "tag": "eu", "hop_secret": "x"}}'
        load(RouterSettings, {**good, "RELAY_CELLS": short})
    with pytest.raises(SettingsError, match="RELAY_DATABASE_URL"):
        load(RouterSettings, {k: v for k, v in good.items() if k != "RELAY_DATABASE_URL"})
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"kind": "root"}, Actor)


def test_the_router_drops_idle_connections_to_a_cell_before_the_cell_does() -> None:
    """A client reusing a connection its server is closing fails at once; the router would answer 503."""
    from common.serve import KEEP_ALIVE_SECONDS
    from router.cells import POOL_IDLE_SECONDS

    assert POOL_IDLE_SECONDS + 10 <= KEEP_ALIVE_SECONDS
