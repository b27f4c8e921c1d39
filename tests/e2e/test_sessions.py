"""Sessions end to end through the router: ingest upserts and counters, the IP hash, management reads."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import secrets
import uuid
from datetime import datetime
from typing import Any

import httpx

from common.ids import uuid7
from tests.conftest import Admin, problem, project_secret, sql


def _post(router: httpx.Client, key: dict[str, Any], **body: Any) -> httpx.Response:
    return router.post("/v1/ingest/sessions", headers=key["h"], json=body)


def test_session_create_and_update(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    ingest = admin.key(p, ["ingest"])
    ext = f"u-{secrets.token_hex(4)}"
    r = _post(router, ingest, user={"external_id": ext, "email": f"{ext}@example.com"},
              device={"os": "macOS", "screen": "1440x900"}, app_version="2.4.1", environment="production",
              user_agent="Mozilla/5.0 (test)")
    assert r.status_code == 201, r.text
    assert r.headers["x-relay-region"] == "us-west"
    s = r.json()
    assert uuid.UUID(s["id"]).version == 7
    assert s["device"] == {"os": "macOS", "screen": "1440x900"}
    assert (s["app_version"], s["environment"], s["user_agent"]) == ("2.4.1", "production", "Mozilla/5.0 (test)")
    assert (s["page_views"], s["interaction_count"]) == (1, 0)
    assert s["started_at"] == s["last_seen_at"]
    assert "ip_hash" not in s  # a browser-safe answer carries nothing derived from the IP
    users = router.get(f"/v1/projects/{p['id']}/end-users", headers=admin.h).json()["data"]
    assert [(u["id"], u["external_id"], u["email"]) for u in users] == [(s["user_id"], ext, f"{ext}@example.com")]

    # The same id again: a page view, fields sent replace, device merges, nothing new is created.
    again = _post(router, ingest, id=s["id"], device={"screen": "800x600"}, app_version="2.4.2",
                  user={"external_id": ext})
    assert again.status_code == 200, again.text
    a = again.json()
    assert (a["id"], a["user_id"], a["started_at"]) == (s["id"], s["user_id"], s["started_at"])
    assert a["page_views"] == 2 and a["app_version"] == "2.4.2" and a["environment"] == "production"
    assert a["device"] == {"os": "macOS", "screen": "800x600"}
    assert datetime.fromisoformat(a["last_seen_at"]) > datetime.fromisoformat(s["last_seen_at"])
    assert len(router.get(f"/v1/projects/{p['id']}/sessions", headers=admin.h).json()["data"]) == 1
    assert len(router.get(f"/v1/projects/{p['id']}/end-users", headers=admin.h).json()["data"]) == 1

    # A client-chosen id works from the first post; an anonymous session takes the user who identifies in it.
    mine = str(uuid7())
    first = _post(router, ingest, id=mine)
    assert first.status_code == 201 and first.json()["id"] == mine and first.json()["user_id"] is None
    assert first.json()["device"] == {} and first.json()["environment"] is None
    later = _post(router, ingest, id=mine, user={"external_id": ext}).json()
    assert later["user_id"] == s["user_id"] and later["page_views"] == 2
    # …and never changes hands afterwards.
    other = _post(router, ingest, id=mine, user={"external_id": "someone-else"}).json()
    assert other["user_id"] == s["user_id"] and other["page_views"] == 3

    # Interactions made in the session are counted on it.
    for text in ("one", "two"):
        i = router.post("/v1/ingest/interactions", headers=ingest["h"],
                        json={"type": "bug", "session_id": s["id"], "content": {"text": text}})
        assert i.status_code == 201, i.text
    got = router.get(f"/v1/projects/{p['id']}/sessions/{s['id']}", headers=admin.h)
    assert got.status_code == 200
    detail = got.json()
    assert detail["interaction_count"] == 2 and detail["page_views"] == 2
    assert detail["project_id"] == p["id"] and len(detail["ip_hash"]) == 64


def test_concurrent_reposts_count_exactly(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    ingest = admin.key(p, ["ingest"])
    sid, n = str(uuid7()), 24
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        replies = list(pool.map(lambda _: _post(router, ingest, id=sid, user={"external_id": "racer"}), range(n)))
    assert sorted(r.status_code for r in replies) == [200] * (n - 1) + [201], [r.text for r in replies]
    # Each post saw its own count: every value from 1 to n exactly once.
    assert sorted(r.json()["page_views"] for r in replies) == list(range(1, n + 1))
    assert {r.json()["user_id"] for r in replies} == {replies[0].json()["user_id"]}
    got = router.get(f"/v1/projects/{p['id']}/sessions/{sid}", headers=admin.h).json()
    assert got["page_views"] == n
    users = router.get(f"/v1/projects/{p['id']}/end-users", headers=admin.h).json()["data"]
    assert [u["external_id"] for u in users] == ["racer"]


def test_ip_hash_is_keyed_per_project_and_never_the_ip(router: httpx.Client, admin: Admin,
                                                       topo: dict[str, Any]) -> None:
    dsn = topo["cells"]["us-west"]["database_url"]
    p1, p2 = admin.project("us-west"), admin.project("us-west")
    k1, k2 = admin.key(p1, ["ingest"]), admin.key(p2, ["ingest"])
    ids = [_post(router, k1).json()["id"], _post(router, k1).json()["id"], _post(router, k2).json()["id"]]
    rows = {str(r["id"]): r for r in sql(dsn, "SELECT id, project_id, ip_hash, s::text AS t FROM sessions s"
                                              " WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids])}
    h1, h1b, h2 = (rows[i]["ip_hash"] for i in ids)
    assert h1 == h1b, "stable within a project"
    assert h1 != h2, "unlinkable across projects"
    client_ip = "127.0.0.1"  # the router sees the test client on loopback
    for pid, digest in ((p1["id"], h1), (p2["id"], h2)):
        secret = project_secret(topo, "us-west", pid)
        assert digest == hmac.new(secret, client_ip.encode(), hashlib.sha256).hexdigest()
    assert all(client_ip not in r["t"] for r in rows.values())
    # Nothing in the cell's database holds the raw address in a session or end user row.
    assert not sql(dsn, "SELECT 1 FROM sessions s WHERE s::text LIKE $1", f"%{client_ip}%")
    assert not sql(dsn, "SELECT 1 FROM end_users u WHERE u::text LIKE $1", f"%{client_ip}%")


def test_session_ids_are_per_project(router: httpx.Client, admin: Admin) -> None:
    a, b = admin.project("us-west"), admin.project("us-west")
    ka, kb = admin.key(a, ["ingest"]), admin.key(b, ["ingest"])
    ra, rb = admin.key(a, ["read"]), admin.key(b, ["read"])
    theirs = _post(router, kb, user={"external_id": "bob"}).json()
    # Project A cannot claim, touch or learn about B's session.
    body = problem(_post(router, ka, id=theirs["id"], user={"external_id": "mallory"}), 409)
    assert theirs["id"] not in str(body) and b["id"] not in str(body)
    assert router.get(f"/v1/projects/{b['id']}/sessions/{theirs['id']}", headers=rb["h"]).json()["page_views"] == 1
    assert router.get(f"/v1/projects/{a['id']}/end-users", headers=ra["h"]).json()["data"] == []
    problem(router.get(f"/v1/projects/{a['id']}/sessions/{theirs['id']}", headers=ra["h"]), 404)
    problem(router.get(f"/v1/projects/{b['id']}/sessions/{theirs['id']}", headers=ra["h"]), 404)
    problem(router.get(f"/v1/projects/{b['id']}/sessions", headers=ra["h"]), 404)
    problem(router.get(f"/v1/projects/{a['id']}/sessions/{uuid7()}", headers=ra["h"]), 404)
    stranger = Admin(router)
    problem(router.get(f"/v1/projects/{b['id']}/sessions", headers=stranger.h), 404)
    problem(router.get(f"/v1/projects/{b['id']}/sessions/{theirs['id']}", headers=stranger.h), 404)
    assert router.get(f"/v1/projects/{a['id']}/sessions", headers=ra["h"]).json() == {"data": [],
                                                                                     "next_cursor": None}


def test_scopes_and_validation(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    ingest, read = admin.key(p, ["ingest"]), admin.key(p, ["read"])
    problem(_post(router, read), 403)
    problem(router.get(f"/v1/projects/{p['id']}/sessions", headers=ingest["h"]), 403)
    problem(router.post("/v1/ingest/sessions", json={}), 401)
    assert problem(_post(router, ingest, environment="prod"), 422)["errors"][0]["pointer"] == "/environment"
    assert problem(_post(router, ingest, app_version="x" * 101), 422)["errors"][0]["pointer"] == "/app_version"
    assert problem(_post(router, ingest, id="not-a-uuid"), 422)["errors"][0]["pointer"] == "/id"
    assert problem(_post(router, ingest, device=[1]), 422)["errors"][0]["pointer"] == "/device"
    body = problem(_post(router, ingest, user={"external_id": ""}), 422)
    assert body["errors"][0]["pointer"].startswith("/user")
    body = problem(_post(router, ingest, user={"email": "x@example.com"}), 422)
    assert body["errors"][0]["pointer"] == "/user/external_id"
    assert router.get(f"/v1/projects/{p['id']}/sessions", headers=read["h"]).json()["data"] == []
    problem(router.get(f"/v1/projects/{p['id']}/sessions?environment=prod", headers=read["h"]), 422)
    problem(router.get(f"/v1/projects/{p['id']}/sessions?cursor=garbage", headers=read["h"]), 422)
    problem(router.get(f"/v1/projects/{p['id']}/sessions?limit=0", headers=read["h"]), 422)
    problem(router.get(f"/v1/projects/{p['id']}/sessions?user_id=nope", headers=read["h"]), 422)


def test_list_filters_and_paging(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    ingest, read = admin.key(p, ["ingest"]), admin.key(p, ["read"])
    made = []
    for i in range(7):
        body: dict[str, Any] = {"environment": "staging" if i % 2 else "production"}
        if i < 3:
            body["user"] = {"external_id": "alice"}
        r = _post(router, ingest, **body)
        assert r.status_code == 201
        made.append(r.json())
    base = f"/v1/projects/{p['id']}/sessions"
    newest_first = [s["id"] for s in reversed(made)]
    seen, cursor = [], None
    while True:
        page = router.get(base, params={"limit": 3, **({"cursor": cursor} if cursor else {})},
                          headers=read["h"]).json()
        assert len(page["data"]) <= 3
        seen += [s["id"] for s in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first
    alice = made[0]["user_id"]
    by_user = router.get(base, params={"user_id": alice}, headers=read["h"]).json()["data"]
    assert [s["id"] for s in by_user] == [s["id"] for s in reversed(made[:3])]
    staging = router.get(base, params={"environment": "staging"}, headers=read["h"]).json()["data"]
    assert [s["id"] for s in staging] == [s["id"] for s in reversed(made) if s["environment"] == "staging"]
    both = router.get(base, params={"environment": "production", "user_id": alice}, headers=read["h"]).json()
    assert [s["id"] for s in both["data"]] == [made[2]["id"], made[0]["id"]]
    middle = made[3]["started_at"].replace("+00:00", "Z")
    after = router.get(f"{base}?created_after={middle}", headers=read["h"])
    assert after.status_code == 200, after.text
    assert [s["id"] for s in after.json()["data"]] == [s["id"] for s in reversed(made[4:])]
    before = router.get(f"{base}?created_before={middle}", headers=read["h"])
    assert [s["id"] for s in before.json()["data"]] == [s["id"] for s in reversed(made[:3])]
