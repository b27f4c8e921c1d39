"""The edge: keys verified in full at the router, scopes on the router's own endpoints, limits where the work is.

A topology of its own with tight limits, loopback trusted as a proxy (a test is many clients by sending
`X-Forwarded-For`) and the us-west cell behind a proxy that can slow it down (to see `/v1/regions` answered
from its cache).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from common.ids import uuid7
from common.keys import new_key, new_key_prefix
from relay.embedded import free_port
from tests.conftest import Admin, Stack, problem, sql
from tests.faults import DelayProxy
from tests.services import StorePostgres

LIMITS = json.dumps({"bad_credentials": "5/minute", "bad_sessions": "5/minute", "signup_client": "3/minute",
                     "signup_email": "2/10minutes", "login_client": "4/15minutes"})
_clients = itertools.count(1)


def client_ip() -> str:
    """An address no other request of this module used: a client of its own as far as the limits go."""
    n = next(_clients)
    return f"198.18.{n // 250}.{n % 250 + 1}"


def as_client(ip: str | None = None) -> dict[str, str]:
    return {"X-Forwarded-For": ip or client_ip()}


@pytest.fixture(scope="module")
def edge(pg: StorePostgres, scratch: Path) -> Iterator[dict[str, Any]]:
    cell_port = free_port()
    proxy = DelayProxy(cell_port)
    stack = Stack(pg, scratch, "edge", cell_urls={"us-west": f"http://127.0.0.1:{proxy.port}"},
                  cell_ports={"us-west": cell_port},
                  router_env={"RELAY_RATE_LIMITS": LIMITS, "RELAY_TRUSTED_PROXIES": '["127.0.0.1/32"]',
                              "RELAY_REGIONS_CACHE_SECONDS": "3"})
    url = stack.dev.topology["router"]["url"]
    router = httpx.Client(base_url=url, timeout=30, trust_env=False, headers=as_client())
    owner = Admin(router)
    project = owner.project("us-west")
    keys = {scope: owner.key(project, [scope]) for scope in ("ingest", "read", "admin")}
    pepper = json.loads((stack.dev.state_dir / "secrets.json").read_text())["key_pepper"].encode()
    try:
        yield {"stack": stack, "router": router, "url": url, "owner": owner, "project": project, "keys": keys,
               "proxy": proxy, "topo": stack.dev.topology, "pepper": pepper}
    finally:
        router.close()
        stack.close()
        proxy.close()


def made_up(key: str) -> str:
    """The same real prefix with another secret."""
    return key[:13] + secrets.choice("ABCDEFGH") * 32


def test_a_made_up_secret_on_a_real_prefix_is_401_on_every_router_endpoint(edge: dict[str, Any]) -> None:
    router: httpx.Client = edge["router"]
    pid, admin_key = edge["project"]["id"], edge["keys"]["admin"]
    base = f"/v1/projects/{pid}"
    keys_before = router.get(f"{base}/api-keys", headers=edge["owner"].h).json()["data"]
    calls = [("GET", base, None), ("GET", f"{base}/members", None), ("GET", f"{base}/move", None),
             ("GET", f"{base}/api-keys", None), ("POST", f"{base}/api-keys", {"name": "x", "scopes": ["admin"]}),
             ("DELETE", f"{base}/api-keys/{admin_key['id']}", None),
             ("POST", f"{base}/members", {"email": edge["owner"].email, "role": "viewer"}),
             ("POST", f"{base}/move", {"to_region": "eu-west"}), ("GET", f"{base}/interactions", None),
             ("POST", "/v1/ingest/interactions", {"type": "bug", "content": {"text": "forged"}}),
             # Checked before the body or query is read: a 401, never a 422 about them.
             ("POST", f"{base}/api-keys", {}), ("POST", f"{base}/members", {"role": 5}), ("PATCH", base, {}),
             ("POST", f"{base}/move", {}), ("GET", f"{base}/audit-logs?limit=x", None), ("POST", "/v1/projects", {}),
             ("PATCH", f"{base}/settings", {"allowed_origins": 5}), ("POST", "/v1/ingest/interactions", {}),
             # And on the public endpoints too: a key presented anywhere is a real one or a 401.
             ("GET", "/v1/regions", None), ("POST", "/v1/auth/login", {})]
    for scope in ("ingest", "admin"):
        forged = {"Authorization": f"Bearer {made_up(edge['keys'][scope]['key'])}"}
        for method, path, body in calls:
            r = router.request(method, path, json=body, headers={**forged, **as_client()})
            problem(r, 401)
            assert "x-relay-region" not in r.headers, f"{method} {path} reached a cell with a made-up secret"
            assert edge["owner"].email not in r.text
    # `?key=` on ingest is checked the same way.
    forged_query = made_up(edge["keys"]["ingest"]["key"])
    r = router.post(f"/v1/ingest/interactions?key={forged_query}", json={"type": "bug", "content": {"text": "x"}},
                    headers=as_client())
    problem(r, 401)
    # Nothing changed: the same keys, none revoked, and the real ones still work.
    assert router.get(f"{base}/api-keys", headers=edge["owner"].h).json()["data"] == keys_before
    assert router.get(base, headers={**admin_key["h"], **as_client()}).status_code == 200
    assert router.post("/v1/ingest/interactions", headers={**edge["keys"]["ingest"]["h"], **as_client()},
                       json={"type": "bug", "content": {"text": "real"}}).status_code == 201


def test_an_ingest_key_reads_nothing_of_the_control_plane(edge: dict[str, Any]) -> None:
    router: httpx.Client = edge["router"]
    pid = edge["project"]["id"]
    base = f"/v1/projects/{pid}"
    ingest, read, admin = (edge["keys"][s]["h"] for s in ("ingest", "read", "admin"))
    for method, path in (("GET", base), ("GET", f"{base}/members"), ("GET", f"{base}/move"),
                         ("GET", f"{base}/api-keys"), ("GET", f"{base}/interactions"), ("GET", f"{base}/residency")):
        r = router.request(method, path, headers={**ingest, **as_client()})
        assert problem(r, 403), (method, path)
        assert edge["owner"].email not in r.text and pid not in r.json().get("detail", "")
    created = router.post(f"{base}/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=ingest)
    problem(created, 403)
    # A read key reads the project and its members, and creates no key; an admin key does.
    assert router.get(base, headers=read).json()["id"] == pid
    assert edge["owner"].email in router.get(f"{base}/members", headers=read).text
    problem(router.post(f"{base}/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=read), 403)
    names = [k["name"] for k in router.get(f"{base}/api-keys", headers=admin).json()["data"]]
    assert "x" not in names, "a refused key creation left a key behind"
    made = router.post(f"{base}/api-keys", json={"name": "by-key", "scopes": ["read"]}, headers=admin)
    assert made.status_code == 201 and made.json()["key"].startswith(made.json()["key_prefix"] + "_")
    # The new key works at once, through the router's own digest.
    assert router.get(base, headers={"Authorization": f"Bearer {made.json()['key']}"}).status_code == 200


def test_keys_are_stored_as_a_keyed_digest_and_bcrypt_hashes_are_upgraded_on_use(edge: dict[str, Any]) -> None:
    router: httpx.Client = edge["router"]
    topo, pid, pepper = edge["topo"], edge["project"]["id"], edge["pepper"]
    control, cell = topo["router"]["database_url"], topo["cells"]["us-west"]["database_url"]
    # A key created now: both planes hold HMAC-SHA256 under the pepper, nothing bcrypt, never the key.
    fresh = edge["keys"]["ingest"]
    digest = hmac.new(pepper, fresh["key"].encode(), hashlib.sha256).hexdigest()
    assert sql(control, "SELECT key_digest, scopes FROM key_directory WHERE key_id = $1", fresh["id"])[0] == (
        digest, ["ingest"])
    assert sql(cell, "SELECT key_digest, key_hash FROM api_keys WHERE id = $1", fresh["id"])[0] == (digest, None)

    def legacy(scopes: list[str]) -> tuple[str, str]:
        """A key as created before digests: a bcrypt hash in the cell, no digest in the directory."""
        key_id, key = str(uuid7()), new_key(new_key_prefix("us"))
        hashed = bcrypt.hashpw(key.encode(), bcrypt.gensalt(rounds=10)).decode()
        sql(cell, "INSERT INTO api_keys (id, project_id, key_hash, key_prefix, name, scopes) VALUES"
                  " ($1, $2, $3, $4, 'old', $5)", key_id, pid, hashed, key[:12], scopes)
        sql(control, "INSERT INTO key_directory (key_prefix, key_id, project_id, region, pending) VALUES"
                     " ($1, $2, $3, 'us-west', false)", key[:12], key_id, pid)
        return key_id, key

    # A made-up secret on an old key's prefix: refused, and no digest is recorded anywhere.
    old_id, old_key = legacy(["ingest"])
    forged = made_up(old_key)
    r = router.post("/v1/ingest/interactions", headers={"Authorization": f"Bearer {forged}", **as_client()},
                    json={"type": "bug", "content": {"text": "x"}})
    problem(r, 401)
    assert sql(control, "SELECT key_digest FROM key_directory WHERE key_id = $1", old_id)[0][0] is None
    assert sql(cell, "SELECT key_digest FROM api_keys WHERE id = $1", old_id)[0][0] is None
    # The real key: accepted (its cell verified it once), and from then on a digest on both sides.
    r = router.post("/v1/ingest/interactions", headers={"Authorization": f"Bearer {old_key}", **as_client()},
                    json={"type": "bug", "content": {"text": "old key"}})
    assert r.status_code == 201, r.text
    digest = hmac.new(pepper, old_key.encode(), hashlib.sha256).hexdigest()
    assert sql(control, "SELECT key_digest, scopes FROM key_directory WHERE key_id = $1", old_id)[0] == (
        digest, ["ingest"])
    assert sql(cell, "SELECT key_digest, key_hash FROM api_keys WHERE id = $1", old_id)[0] == (digest, None)
    # Its scopes hold at the edge now: an ingest key still reads nothing of the project.
    problem(router.get(f"/v1/projects/{pid}", headers={"Authorization": f"Bearer {old_key}"}), 403)
    # An old read key on a router endpoint is verified the same way.
    read_id, read_key = legacy(["read"])
    assert router.get(f"/v1/projects/{pid}/members", headers={"Authorization": f"Bearer {read_key}"}
                      ).status_code == 200
    assert sql(control, "SELECT scopes FROM key_directory WHERE key_id = $1", read_id)[0][0] == ["read"]


def test_bad_secrets_are_limited_wherever_they_are_found(edge: dict[str, Any]) -> None:
    router: httpx.Client = edge["router"]
    pid, owner = edge["project"]["id"], edge["owner"]
    forged = {"Authorization": f"Bearer {made_up(edge['keys']['read']['key'])}"}
    # Made-up secrets from one client: five 401s, then 429, on router endpoints and ingest alike.
    me = as_client()
    codes = [router.get(f"/v1/projects/{pid}/members", headers={**forged, **me}).status_code for _ in range(5)]
    limited = router.post("/v1/ingest/interactions", headers={**forged, **me}, json={"type": "bug", "content": {}})
    assert codes == [401] * 5 and problem(limited, 429) and int(limited.headers["retry-after"]) > 0
    # Another client is not affected.
    problem(router.get(f"/v1/projects/{pid}", headers={**forged, **as_client()}), 401)
    # A key the cell refuses (revoked there first) counts too: its 401s, relayed, use up the client's budget.
    victim = owner.key(edge["project"], ["ingest"])
    sql(edge["topo"]["cells"]["us-west"]["database_url"], "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
        victim["id"])
    time.sleep(1.2)  # the cell's own cache of the key
    other = as_client()
    for _ in range(5):
        r = router.post("/v1/ingest/interactions", headers={**victim["h"], **other},
                        json={"type": "bug", "content": {"text": "x"}})
        problem(r, 401)
        assert r.headers.get("x-relay-region") == "us-west"  # the cell's answer
    problem(router.get(f"/v1/projects/{pid}", headers={**forged, **other}), 429)
    # Unknown session tokens: five 401s, then 429, and past that even a real session from that client waits.
    third = as_client()
    for _ in range(5):
        problem(router.get("/v1/projects", headers={"Authorization": f"Bearer rs_{secrets.token_urlsafe(32)}",
                                                    **third}), 401)
    problem(router.get("/v1/projects", headers={"Authorization": "Bearer rs_made_up", **third}), 429)
    problem(router.get(f"/v1/projects/{pid}/interactions", headers={**owner.h, **third}), 429)
    assert router.get(f"/v1/projects/{pid}/interactions", headers={**owner.h, **as_client()}).status_code == 200


def test_signup_is_limited_per_client_and_per_email(edge: dict[str, Any]) -> None:
    router: httpx.Client = edge["router"]
    me = as_client()
    for _ in range(3):
        r = router.post("/v1/auth/signup", headers=me, json={
            "email": f"s-{secrets.token_hex(4)}@example.com", "password": "a long password", "name": "S"})
        assert r.status_code == 201, r.text
    limited = router.post("/v1/auth/signup", headers=me, json={
        "email": f"s-{secrets.token_hex(4)}@example.com", "password": "a long password", "name": "S"})
    assert problem(limited, 429) and int(limited.headers["retry-after"]) > 0
    # One address tried again and again, from many clients: limited too.
    email = f"e-{secrets.token_hex(4)}@example.com"
    body = {"email": email, "password": "a long password", "name": "E"}
    assert router.post("/v1/auth/signup", json=body, headers=as_client()).status_code == 201
    problem(router.post("/v1/auth/signup", json=body, headers=as_client()), 409)
    problem(router.post("/v1/auth/signup", json=body, headers=as_client()), 429)


def test_failed_logins_are_limited_per_client(edge: dict[str, Any]) -> None:
    """Each failed login costs a bcrypt: one client trying many addresses is stopped (429) before the limit per
    account would notice, while the same account from another client still signs in."""
    router: httpx.Client = edge["router"]
    owner: Admin = edge["owner"]
    me = as_client()
    for _ in range(4):
        problem(router.post("/v1/auth/login", headers=me, json={
            "email": f"nobody-{secrets.token_hex(4)}@example.com", "password": "not a password of theirs"}), 401)
    limited = router.post("/v1/auth/login", headers=me, json={"email": owner.email, "password": owner.password})
    assert problem(limited, 429) and int(limited.headers["retry-after"]) > 0
    assert router.post("/v1/auth/login", headers=as_client(),
                       json={"email": owner.email, "password": owner.password}).status_code == 200


def test_forwarded_for_counts_only_from_trusted_proxies(edge: dict[str, Any]) -> None:
    url, pid = edge["url"], edge["project"]["id"]
    forged = {"Authorization": f"Bearer {made_up(edge['keys']['read']['key'])}"}
    # From 127.0.0.2, not a trusted proxy: its X-Forwarded-For is ignored, so a new one each time does not help.
    untrusted = httpx.Client(base_url=url, timeout=30, trust_env=False,
                             transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with untrusted:
        codes = [untrusted.get(f"/v1/projects/{pid}", headers={**forged, **as_client()}).status_code
                 for _ in range(6)]
    assert codes == [401] * 5 + [429], codes
    # Through the trusted proxy (loopback), the rightmost untrusted hop is the client: spoofing the leftmost
    # entry changes nothing, a trusted hop on the right is skipped.
    router: httpx.Client = edge["router"]
    real = client_ip()
    codes = [router.get(f"/v1/projects/{pid}", headers={**forged, "X-Forwarded-For": f"{client_ip()}, {real}"}
                        ).status_code for _ in range(5)]
    codes.append(router.get(f"/v1/projects/{pid}", headers={**forged, "X-Forwarded-For": f"{real}, 127.0.0.1"}
                            ).status_code)
    assert codes == [401] * 5 + [429], codes
    # The cell's ip_hash follows the same address: two clients through the proxy are two addresses, while
    # everything from the untrusted peer is that peer, whatever it forwards.
    ingest = edge["keys"]["ingest"]["h"]
    cell = edge["topo"]["cells"]["us-west"]["database_url"]

    def session(client: httpx.Client, ip: str) -> str:
        sid = str(uuid7())
        r = client.post("/v1/ingest/sessions", json={"id": sid}, headers={**ingest, "X-Forwarded-For": ip})
        assert r.status_code == 201, r.text
        value: str = sql(cell, "SELECT ip_hash FROM sessions WHERE id = $1", sid)[0][0]
        return value

    a, b = client_ip(), client_ip()
    assert session(router, a) != session(router, b)
    assert session(router, a) == session(router, a)
    with httpx.Client(base_url=url, timeout=30, trust_env=False,
                      transport=httpx.HTTPTransport(local_address="127.0.0.2")) as untrusted:
        assert session(untrusted, a) == session(untrusted, b)


def test_the_audit_log_records_the_forwarded_client(edge: dict[str, Any]) -> None:
    """Every router write records the client the trusted proxy names (truncated), never the proxy itself."""
    router: httpx.Client = edge["router"]
    owner: Admin = edge["owner"]
    client = {"X-Forwarded-For": "203.0.113.77"}
    r = router.post("/v1/projects", json={"name": "forwarded", "region": "us-west"}, headers={**owner.h, **client})
    assert r.status_code == 201, r.text
    p = r.json()
    pid = p["id"]
    assert router.patch(f"/v1/projects/{pid}", json={"name": "forwarded too"},
                        headers={**owner.h, **client}).status_code == 200
    assert router.post(f"/v1/projects/{pid}/api-keys", json={"name": "k", "scopes": ["read"]},
                       headers={**owner.h, **client}).status_code == 201
    assert router.post(f"/v1/projects/{pid}/members", json={"email": f"x-{secrets.token_hex(4)}@example.com",
                                                            "role": "viewer"}, headers={**owner.h, **client}
                       ).status_code == 201
    assert router.post(f"/v1/projects/{pid}/move", json={"to_region": "eu-west"},
                       headers={**owner.h, **client}).status_code == 202
    rows = sql(edge["topo"]["router"]["database_url"],
               "SELECT action, ip_address FROM audit_logs WHERE project_id = $1::uuid ORDER BY created_at", pid)
    assert [r["action"] for r in rows] == ["project.created", "project.renamed", "api_key.created", "member.invited",
                                           "project.move_requested"]
    assert {r["ip_address"] for r in rows} == {"203.0.113.0"}, rows


def test_regions_are_answered_from_a_short_cache(edge: dict[str, Any]) -> None:
    router: httpx.Client = edge["router"]
    proxy: DelayProxy = edge["proxy"]
    proxy.delay = 1.0
    try:
        time.sleep(3.1)  # whatever an earlier call cached is stale now
        began = time.monotonic()
        first = router.get("/v1/regions")
        assert first.status_code == 200 and time.monotonic() - began >= 1.0  # asked the (slow) cell
        began = time.monotonic()
        answers = [router.get("/v1/regions") for _ in range(10)]
        assert time.monotonic() - began < 1.0, "each call asked the cells again"
        assert all(a.json() == first.json() for a in answers)
        assert {r["name"] for r in first.json()["data"]} == {"us-west", "eu-west"}
        time.sleep(3.1)
        began = time.monotonic()
        assert router.get("/v1/regions").status_code == 200 and time.monotonic() - began >= 1.0  # refreshed
    finally:
        proxy.delay = 0.0


def test_audit_entries_carry_the_client_address_the_limits_use(edge: dict[str, Any]) -> None:
    """The router's audit log names the client the trusted proxy forwarded for (truncated), as the limits and the
    cells' `ip_hash` do, never the proxy's own address: project creation, rename, key creation and a move."""
    router: httpx.Client = edge["router"]
    owner: Admin = edge["owner"]
    ip = client_ip()
    me = {**owner.h, "X-Forwarded-For": f"{client_ip()}, {ip}"}  # the leftmost entry is the client's own claim
    made = router.post("/v1/projects", json={"name": "audited", "region": "us-west"}, headers=me)
    assert made.status_code == 201, made.text
    pid = made.json()["id"]
    base = f"/v1/projects/{pid}"
    assert router.patch(base, json={"name": "audited again"}, headers=me).status_code == 200
    assert router.post(f"{base}/api-keys", json={"name": "k", "scopes": ["read"]}, headers=me).status_code == 201
    moved = router.post(f"{base}/move", json={"to_region": "eu-west"}, headers=me)
    assert moved.status_code == 202, moved.text
    entries = router.get(f"{base}/audit-logs", headers=owner.h).json()["data"]
    ours = {e["action"]: e["ip_address"] for e in entries if e["source"] == "router"}
    truncated = ip.rsplit(".", 1)[0] + ".0"
    assert ours == {"project.created": truncated, "project.renamed": truncated, "api_key.created": truncated,
                    "project.move_requested": truncated}, entries
