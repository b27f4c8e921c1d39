"""The pieces of the trust boundary that are plain functions: reading a presented credential, the keyed
digest of a key, the access levels, and who the client is behind trusted proxies."""

from __future__ import annotations

import pytest

from common.access import ADMIN, READ, WRITE, scope_level
from common.keys import digest, matches, new_key, new_key_prefix, presented
from common.netaddr import client_address, networks
from common.problems import Problem

PEPPER = b"p" * 32


def test_a_presented_key_is_parsed_in_one_place() -> None:
    key = new_key(new_key_prefix("us"))
    found = presented(f"Bearer {key}")
    assert found is not None and found.kind == "key" and found.token == key and found.prefix == key[:12]
    assert presented(None) is None
    session = presented("Bearer rs_abc")
    assert session is not None and session.kind == "session"
    # `?key=` counts on ingest paths only, and the header wins over it.
    assert presented(None, f"key={key}".encode(), ingest=True) == found
    assert presented(None, f"key={key}", ingest=False) is None
    other = new_key(new_key_prefix("eu"))
    assert presented(f"Bearer {other}", f"key={key}", ingest=True).token == other  # type: ignore[union-attr]
    # A prefix alone, a short secret, a stray character or another scheme is refused outright.
    for bad in (key[:12], key[:-1], key + "x", key[:-1] + "!", "Basic dXNlcjpwYXNz"):
        with pytest.raises(Problem) as refused:
            presented(bad if bad.startswith("Basic") else f"Bearer {bad}")
        assert refused.value.status == 401, bad


def test_the_digest_is_keyed_and_compared_whole() -> None:
    key = new_key(new_key_prefix("us"))
    stored = digest(PEPPER, key)
    assert len(stored) == 64 and key not in stored
    assert matches(PEPPER, key, stored)
    assert not matches(b"q" * 32, key, stored), "another pepper gives another digest"
    made_up = key[:13] + ("A" if key[13] != "A" else "B") + key[14:]
    assert not matches(PEPPER, made_up, stored), "same prefix, one character of the secret changed"


def test_levels_of_scopes() -> None:
    assert scope_level(["ingest"]) == 0
    assert scope_level(["read"]) == READ
    assert scope_level(["ingest", "write"]) == WRITE
    assert scope_level(["admin"]) == ADMIN


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trusted = networks(("10.0.0.0/8", "127.0.0.1"))
    # No trusted proxies, or an untrusted peer: the peer is the client, whatever the header says.
    assert client_address("198.51.100.7", ["203.0.113.1"], ()) == "198.51.100.7"
    assert client_address("198.51.100.7", ["203.0.113.1"], trusted) == "198.51.100.7"
    # A trusted peer: the rightmost hop that is not a trusted proxy.
    assert client_address("10.1.2.3", ["203.0.113.1"], trusted) == "203.0.113.1"
    assert client_address("10.1.2.3", ["1.2.3.4, 203.0.113.1, 10.9.9.9"], trusted) == "203.0.113.1"
    assert client_address("127.0.0.1", ["1.2.3.4", "203.0.113.1"], trusted) == "203.0.113.1"
    # No header, or every hop trusted: the leftmost (the first proxy's own client) or the peer.
    assert client_address("10.1.2.3", [], trusted) == "10.1.2.3"
    assert client_address("10.1.2.3", ["10.4.4.4, 10.5.5.5"], trusted) == "10.4.4.4"
    # A malformed hop stops the walk at the trusted proxy that reported it.
    assert client_address("10.1.2.3", ["203.0.113.1, nonsense"], trusted) == "10.1.2.3"
    assert client_address("10.1.2.3", ["nonsense, 203.0.113.1"], trusted) == "203.0.113.1"
    assert client_address(None, ["203.0.113.1"], trusted) is None
    with pytest.raises(ValueError, match="not an address"):
        networks(("10.0.0.0/33",))
