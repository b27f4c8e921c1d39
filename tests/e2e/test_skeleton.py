"""The walking skeleton end to end: SDK, dashboard and auditor flows through the real router and cells."""

from __future__ import annotations

import base64
import concurrent.futures
import secrets
import time
import uuid
from typing import Any

import httpx
import msgspec

from common.ids import uuid7
from common.signing import Actor, sign
from tests.conftest import Admin, problem, sql


def _ingest(router: httpx.Client, key: dict[str, Any], text: str, **extra: Any) -> httpx.Response:
    return router.post("/v1/ingest/interactions", headers=key["h"],
                       json={"type": "bug", "content": {"text": text}, **extra})


def test_signup_login_logout(router: httpx.Client) -> None:
    admin = Admin(router)
    assert admin.token.startswith("rs_") and admin.user["email"] == admin.email
    ok = router.post("/v1/auth/login", json={"email": admin.email.upper(), "password": admin.password})
    assert ok.status_code == 200 and ok.json()["token"].startswith("rs_")
    problem(router.post("/v1/auth/login", json={"email": admin.email, "password": "wrong password!"}), 401)
    problem(router.post("/v1/auth/login", json={"email": "nobody@example.com", "password": "wrong password!"}), 401)
    problem(router.post("/v1/auth/signup", json={"email": admin.email, "password": admin.password, "name": "x"}),
            409)
    token = ok.json()["token"]
    assert router.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()["email"] == admin.email
    assert router.post("/v1/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204
    problem(router.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}), 401)
    problem(router.get("/v1/projects", headers={"Authorization": f"Bearer {token}"}), 401)


def test_projects_in_each_region_keep_their_data_home(router: httpx.Client, admin: Admin,
                                                      topo: dict[str, Any]) -> None:
    cells = topo["cells"]
    canary = {r: f"canary-{r}-{secrets.token_hex(8)}" for r in cells}
    stored: dict[str, str] = {}
    for region in cells:
        project = admin.project(region)
        assert project["region"] == region and uuid.UUID(project["id"]).version == 7
        assert router.get(f"/v1/projects/{project['id']}", headers=admin.h).json()["region"] == region
        key = admin.key(project, ["ingest"])
        assert key["key_prefix"] == key["key"][:12] and key["key"].startswith(f"rk_{region[:2]}_")
        r = _ingest(router, key, canary[region])
        assert r.status_code == 201, r.text
        assert r.headers["x-relay-region"] == region
        body = r.json()
        assert body["type"] == "bug" and body["status"] == "new" and uuid.UUID(body["id"]).version == 7
        stored[region] = body["id"]
        page = router.get(f"/v1/projects/{project['id']}/interactions", headers=admin.h)
        assert page.status_code == 200 and page.headers["x-relay-region"] == region
        assert [i["id"] for i in page.json()["data"]] == [body["id"]]
        one = router.get(f"/v1/projects/{project['id']}/interactions/{body['id']}", headers=admin.h).json()
        assert one["content"]["text"] == canary[region]
    listed = {p["region"] for p in router.get("/v1/projects", headers=admin.h).json()["data"]}
    assert listed >= set(cells)
    # The auditor's view: each canary is in its own region's database and nowhere else.
    for region, cell in cells.items():
        for other, text in canary.items():
            rows = sql(cell["database_url"], "SELECT id FROM interactions WHERE content_text = $1", text)
            assert len(rows) == (1 if other == region else 0), (region, other)
    for text in canary.values():
        assert not sql(topo["router"]["database_url"],
                       "SELECT 1 FROM outbox WHERE payload::text LIKE $1", f"%{text}%")


def test_tenancy_scopes_and_revocation(router: httpx.Client, admin: Admin) -> None:
    a, b = admin.project("us-west"), admin.project("eu-west")
    a_read = admin.key(a, ["read"])
    a_ingest = admin.key(a, ["ingest"])
    b_ingest = admin.key(b, ["ingest"])
    assert _ingest(router, b_ingest, "for b").status_code == 201
    # A key of project A cannot read project B: 404, never which.
    problem(router.get(f"/v1/projects/{b['id']}/interactions", headers=a_read["h"]), 404)
    problem(router.get(f"/v1/projects/{uuid7()}/interactions", headers=a_read["h"]), 404)
    # An ingest key cannot read.
    problem(router.get(f"/v1/projects/{a['id']}/interactions", headers=a_ingest["h"]), 403)
    # A read key cannot ingest.
    problem(_ingest(router, a_read, "nope"), 403)
    assert router.get(f"/v1/projects/{a['id']}/interactions", headers=a_read["h"]).status_code == 200
    # Another admin with no membership sees nothing.
    stranger = Admin(router)
    problem(router.get(f"/v1/projects/{a['id']}/interactions", headers=stranger.h), 404)
    problem(router.get(f"/v1/projects/{a['id']}", headers=stranger.h), 404)
    problem(router.post(f"/v1/projects/{a['id']}/api-keys", json={"name": "x", "scopes": ["read"]},
                        headers=stranger.h), 404)
    # Revocation: refused within a second, everywhere.
    assert _ingest(router, a_ingest, "before revoke").status_code == 201
    listed = router.get(f"/v1/projects/{a['id']}/api-keys", headers=admin.h).json()["data"]
    assert {k["key_prefix"] for k in listed} >= {a_read["key_prefix"], a_ingest["key_prefix"]}
    assert all("key" not in k for k in listed)
    r = router.delete(f"/v1/projects/{a['id']}/api-keys/{a_ingest['id']}", headers=admin.h)
    assert r.status_code == 200, r.text
    revoked_at = time.monotonic()
    while True:
        resp = _ingest(router, a_ingest, "after revoke")
        if resp.status_code == 401:
            break
        assert time.monotonic() - revoked_at < 1.0, "revoked key still accepted after 1 s"
        time.sleep(0.05)
    problem(resp, 401)
    problem(router.post("/v1/ingest/interactions", json={"type": "bug", "content": {"text": "x"}}), 401)
    bogus = {"Authorization": "Bearer rk_us_zzzzzz_" + "A" * 32}
    problem(router.post("/v1/ingest/interactions", headers=bogus, json={"type": "bug", "content": {}}), 401)
    # A guessed secret for a real prefix is refused by the cell's bcrypt check.
    guessed = {"Authorization": f"Bearer {a_read['key_prefix']}_" + "B" * 32}
    problem(router.get(f"/v1/projects/{a['id']}/interactions", headers=guessed), 401)


def test_errors_are_problems(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    h = {**key["h"], "Content-Type": "application/json"}
    problem(router.post("/v1/ingest/interactions", headers=h, content=b"{"), 400)
    body = problem(router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "nope", "content": {}}),
                   422)
    assert body["errors"][0]["pointer"] == "/type"
    body = problem(router.post("/v1/ingest/interactions", headers=key["h"],
                               json={"type": "bug", "content": {"text": 5}}), 422)
    assert body["errors"][0]["pointer"] == "/content/text"
    problem(router.post("/v1/projects", headers=admin.h, json={"name": "x", "region": "mars-1"}), 422)
    problem(router.post("/v1/projects", headers=admin.h, json={"region": "eu-west"}), 422)
    problem(router.get("/v1/nothing-here"), 404)
    problem(router.get(f"/v1/projects/{p['id']}/nothing-here", headers=admin.h), 404)
    problem(router.get(f"/v1/projects/{p['id']}/interactions?limit=1000", headers=admin.h), 422)
    problem(router.get(f"/v1/projects/{p['id']}/interactions?cursor=garbage", headers=admin.h), 422)
    big = {"type": "bug", "content": {"text": "x" * (1024 * 1024 + 10)}}
    problem(router.post("/v1/ingest/interactions", headers=key["h"], json=big), 413)
    r = router.get("/v1/regions", headers={"X-Request-Id": "trace-me-123"})
    assert r.headers["x-request-id"] == "trace-me-123"
    regions = {x["name"]: x for x in r.json()["data"]}
    assert regions["eu-west"]["status"] == "ok" and regions["us-west"]["tag"] == "us"


def test_idempotent_ingest_under_concurrent_retries(router: httpx.Client, admin: Admin,
                                                    topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    key = admin.key(p, ["ingest"])
    session_id = str(uuid7())
    body = {"id": str(uuid7()), "type": "feedback", "content": {"text": "twice"}, "session_id": session_id,
            "user": {"external_id": "u-1", "email": "u1@example.com"},
            "logs": {"console": [{"level": "error", "message": "boom"}]}}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda _: router.post("/v1/ingest/interactions", headers=key["h"],
                                                      json=body).status_code, range(8)))
    assert codes == [200] * 7 + [201], codes
    dsn = topo["cells"]["us-west"]["database_url"]
    assert sql(dsn, "SELECT count(*) AS n FROM interactions WHERE id = $1", uuid.UUID(body["id"]))[0]["n"] == 1
    assert sql(dsn, "SELECT count(*) AS n FROM interaction_logs WHERE interaction_id = $1",
               uuid.UUID(body["id"]))[0]["n"] == 1
    assert sql(dsn, "SELECT interaction_count FROM sessions WHERE id = $1",
               uuid.UUID(session_id))[0]["interaction_count"] == 1
    again = router.post("/v1/ingest/interactions", headers=key["h"], json=body)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    one = router.get(f"/v1/projects/{p['id']}/interactions/{body['id']}", headers=admin.h).json()
    assert one["logs"]["console"][0]["message"] == "boom" and one["user_id"]


def test_cells_answer_only_the_router(topo: dict[str, Any], router: httpx.Client, admin: Admin) -> None:
    eu = topo["cells"]["eu-west"]
    us = topo["cells"]["us-west"]
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest", "read"])
    path = f"/v1/projects/{p['id']}/interactions"
    with httpx.Client(base_url=eu["url"], trust_env=False, timeout=10) as cell:
        problem(cell.get(path, headers=key["h"]), 401)  # unsigned
        problem(cell.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": {}}), 401)
        actor = Actor(kind="key", project_id=p["id"], key_prefix=key["key_prefix"])
        wrong = sign(b"not-the-secret-of-this-cell", "GET", path, actor)
        problem(cell.get(path, headers={**key["h"], **wrong}), 401)
        secret = _hop_secret(topo, "eu-west")
        stale = sign(secret, "GET", path, actor, now=time.time() - 120)
        problem(cell.get(path, headers={**key["h"], **stale}), 401)
        other_path = sign(secret, "GET", "/v1/projects/x/interactions", actor)
        problem(cell.get(path, headers={**key["h"], **other_path}), 401)
        good = sign(secret, "GET", path, actor)
        ok = cell.get(path, headers={**key["h"], **good})
        assert ok.status_code == 200 and ok.headers["x-relay-region"] == "eu-west"
    # The us-west cell, asked (correctly signed) about an eu-west project, says where it lives.
    with httpx.Client(base_url=us["url"], trust_env=False, timeout=10) as cell:
        body = msgspec.json.encode({"type": "bug", "content": {}})
        signed = sign(_hop_secret(topo, "us-west"), "POST", "/v1/ingest/interactions",
                      Actor(kind="key", project_id=p["id"], key_prefix=key["key_prefix"]), body=body)
        r = cell.post("/v1/ingest/interactions", headers={**key["h"], **signed, "content-type": "application/json"},
                      content=body)
        assert problem(r, 421)["region"] == "eu-west"
        admin_actor = Actor(kind="admin", project_id=p["id"], user_id=admin.user["id"], role="owner")
        r = cell.get(path, headers=sign(_hop_secret(topo, "us-west"), "GET", path, admin_actor))
        problem(r, 421)


def _hop_secret(topo: dict[str, Any], region: str) -> bytes:
    import json
    from pathlib import Path

    state = Path(topo["cells"][region]["object_store"][len("file://"):]).parent.parent
    return str(json.loads((state / "secrets.json").read_text())[region]).encode()


def test_outbox_heals_a_half_done_provisioning(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    """A router that died after its commit but before the cell call leaves nothing half done."""
    control = topo["router"]["database_url"]
    project_id = uuid7()
    sql(control, "INSERT INTO project_directory (id, name, region, created_by) VALUES ($1, 'crashed', 'eu-west', $2)",
        project_id, uuid.UUID(admin.user["id"]))
    sql(control, "INSERT INTO project_memberships (id, user_id, project_id, role) VALUES ($1, $2, $3, 'owner')",
        uuid7(), uuid.UUID(admin.user["id"]), project_id)
    sql(control, "INSERT INTO outbox (project_id, kind, payload, created_at) VALUES ($1, 'project.provision', '{}',"
        " now() - interval '1 minute')", project_id)
    # A key reservation whose secret never reached anyone is discarded.
    prefix = "rk_eu_" + secrets.token_hex(3)
    sql(control, "INSERT INTO key_directory (key_prefix, key_id, project_id, region) VALUES ($1, $2, $3, 'eu-west')",
        prefix, uuid7(), project_id)
    sql(control, "INSERT INTO outbox (project_id, kind, payload, created_at) VALUES ($1, 'key.discard', $2::jsonb,"
        " now() - interval '1 minute')", project_id,
        f'{{"region": "eu-west", "key_id": "{uuid7()}", "key_prefix": "{prefix}"}}')
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        states = sql(control, "SELECT state::text AS s FROM project_directory WHERE id = $1", project_id)
        keys = sql(control, "SELECT 1 FROM key_directory WHERE key_prefix = $1", prefix)
        if states[0]["s"] == "active" and not keys:
            break
        time.sleep(0.3)
    assert states[0]["s"] == "active" and not keys
    assert sql(topo["cells"]["eu-west"]["database_url"], "SELECT name FROM projects WHERE id = $1",
               project_id)[0]["name"] == "crashed"
    assert not sql(control, "SELECT 1 FROM outbox WHERE project_id = $1 AND dispatched_at IS NULL", project_id)
    # And the healed project works like any other.
    key = admin.key({"id": str(project_id)}, ["ingest"])
    assert _ingest(router, key, "after heal").status_code == 201


def test_long_passwords_sign_up_and_log_in(router: httpx.Client) -> None:
    """bcrypt takes at most 72 bytes and refuses more: a password past that (up to the 200 characters signup
    allows, or any length at login) is a working password or a 401, never a 500."""
    email = f"long-{secrets.token_hex(4)}@example.com"
    password = "pässwörd " * 22  # 198 characters, 242 bytes
    r = router.post("/v1/auth/signup", json={"email": email, "password": password, "name": "Long"})
    assert r.status_code == 201, r.text
    assert router.post("/v1/auth/login", json={"email": email, "password": password}).status_code == 200
    # Every byte counts, not only bcrypt's first 72.
    problem(router.post("/v1/auth/login", json={"email": email, "password": password[:-1] + "!"}), 401)
    problem(router.post("/v1/auth/login", json={"email": email, "password": "x" * 1_000_000}), 401)
    problem(router.post("/v1/auth/login", json={"email": "nobody@example.com", "password": "y" * 100}), 401)


def test_members_and_roles(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    viewer = Admin(router)
    admin.invite(p, viewer, "viewer")
    assert router.get(f"/v1/projects/{p['id']}/interactions", headers=viewer.h).status_code == 200
    problem(router.post(f"/v1/projects/{p['id']}/api-keys", json={"name": "x", "scopes": ["read"]},
                        headers=viewer.h), 403)
    problem(router.patch(f"/v1/projects/{p['id']}/interactions/{uuid7()}", json={"status": "resolved"},
                         headers=viewer.h), 403)
    members = router.get(f"/v1/projects/{p['id']}/members", headers=viewer.h).json()["data"]
    assert {m["role"] for m in members} == {"owner", "viewer"}
    problem(router.delete(f"/v1/projects/{p['id']}/members/{admin.user['id']}", headers=admin.h), 409)
    assert router.delete(f"/v1/projects/{p['id']}/members/{viewer.user['id']}", headers=admin.h).status_code == 204
    problem(router.get(f"/v1/projects/{p['id']}/interactions", headers=viewer.h), 404)


def test_encoded_query_strings_reach_the_cell_as_signed(router: httpx.Client, admin: Admin) -> None:
    """The router forwards the target byte for byte, so percent-encoded queries keep their signature valid."""
    p = admin.project("us-west")
    r = router.get(f"/v1/projects/{p['id']}/interactions",
                   params={"q": "a@b.c: x/y?z", "created_after": "2020-01-01T00:00:00+00:00"}, headers=admin.h)
    assert r.status_code == 200, r.text
    assert "%40" in str(r.request.url) and "%3A" in str(r.request.url)


def test_hooks_are_routed_by_project_without_credentials(router: httpx.Client, admin: Admin) -> None:
    """Providers' inbound webhooks reach the project's cell, which alone decides whether to trust them."""
    p = admin.project("eu-west")
    problem(router.post(f"/v1/hooks/{uuid7()}/github", json={}), 404)
    problem(router.post("/v1/hooks/not-a-uuid/github", json={}), 404)
    r = router.post(f"/v1/hooks/{p['id']}/no-such-provider", json={})
    assert r.status_code == 404 and r.headers["x-relay-region"] == "eu-west"


def test_deeply_nested_json_is_refused_not_crashed(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    key = admin.key(p, ["ingest"])
    deep: Any = "x"
    for _ in range(500):
        deep = {"a": deep}
    body = problem(router.post("/v1/ingest/interactions", headers=key["h"],
                               json={"type": "bug", "content": {"text": "t", "extra": deep}}), 422)
    assert body["errors"][0]["pointer"] == "/content"
    missing = problem(router.get(f"/v1/projects/{p['id']}/interactions?limit=", headers=admin.h), 422)
    assert missing["errors"]


def test_undecodable_json_is_400_not_500(router: httpx.Client, admin: Admin) -> None:
    """Bodies msgspec cannot decode at all — bytes that are not UTF-8, JSON nested deeper than its recursion
    limit — are the caller's malformed request (400) on the router's own endpoints and the cells', and
    create nothing."""
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    bodies = {"not utf-8": b'{"name": "\xff\xfe", "region": "eu-west"}', "deep": b"[" * 10_000 + b"]" * 10_000,
              "deep object": b'{"a":' * 5_000 + b"1" + b"}" * 5_000}
    calls = [("/v1/projects", admin.h), ("/v1/auth/login", {}), (f"/v1/projects/{p['id']}/members", admin.h),
             ("/v1/ingest/interactions", key["h"]), ("/v1/ingest/sessions", key["h"]),
             (f"/v1/projects/{p['id']}/feedback-items", admin.h)]
    projects = router.get("/v1/projects", headers=admin.h).json()["data"]
    for path, headers in calls:
        for what, body in bodies.items():
            r = router.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
            assert r.status_code == 400, (path, what, r.status_code, r.text[:300])
            problem(r, 400)
    assert router.get("/v1/projects", headers=admin.h).json()["data"] == projects
    base = f"/v1/projects/{p['id']}"
    assert router.get(f"{base}/interactions", headers=admin.h).json()["data"] == []
    assert router.get(f"{base}/feedback-items", headers=admin.h).json()["data"] == []


def test_numbers_and_dates_out_of_range_are_422(router: httpx.Client, admin: Admin) -> None:
    """Times that parse but leave the datetime range once put in UTC are a 422 problem wherever they reach a
    query (filters, cursors, stored fields), and change nothing."""
    p = admin.project("us-west")
    base = f"/v1/projects/{p['id']}"
    late, early = "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"
    for path in ("interactions", "sessions", "audit-logs", "feedback-items", "conversations", "webhooks"):
        for when in (late, early):
            if path in ("interactions", "sessions", "audit-logs"):
                problem(router.get(f"{base}/{path}", params={"created_after": when}, headers=admin.h), 422)
            cursor = base64.urlsafe_b64encode(msgspec.json.encode([when, str(uuid7())])).decode().rstrip("=")
            problem(router.get(f"{base}/{path}", params={"cursor": cursor}, headers=admin.h), 422)
    keys = router.get(f"{base}/api-keys", headers=admin.h).json()["data"]
    refused = problem(router.post(f"{base}/api-keys", json={"name": "k", "scopes": ["read"], "expires_at": late},
                                  headers=admin.h), 422)
    assert refused["instance"] == f"{base}/api-keys", refused  # the caller's path, not the cell's internal one
    assert router.get(f"{base}/api-keys", headers=admin.h).json()["data"] == keys
    problem(router.post(f"{base}/roadmap-items", json={"title": "t", "eta": early}, headers=admin.h), 422)
    assert router.get(f"{base}/roadmap-items", headers=admin.h).json()["data"] == []
    # The same requests with dates in range go through.
    assert router.get(f"{base}/interactions", params={"created_after": "9999-12-31T00:00:00Z"},
                      headers=admin.h).status_code == 200
