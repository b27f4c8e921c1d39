"""Privacy rules end to end: defaults, server-side redaction before storage, management, SDK config."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from common.ids import uuid7
from common.signing import Actor, sign
from tests.conftest import Admin, problem, sql


def _db_hits(dsn: str, needle: str) -> dict[str, int]:
    """Rows, in every table of the store, whose text form contains `needle` (what an auditor would scan)."""

    async def scan() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            tables = await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
                " AND table_schema NOT IN ('pg_catalog', 'information_schema')")
            hits: dict[str, int] = {}
            for t in tables:
                n = await conn.fetchval(
                    f'SELECT count(*) FROM "{t["table_schema"]}"."{t["table_name"]}" x WHERE x::text LIKE $1',
                    f"%{needle}%")
                if n:
                    hits[f'{t["table_schema"]}.{t["table_name"]}'] = n
            return hits
        finally:
            await conn.close()

    return asyncio.run(scan())


def _card() -> str:
    """A random Luhn-valid 16-digit number, as a person would type it (groups of four)."""
    digits = [4] + [secrets.randbelow(10) for _ in range(14)]
    total = sum(d if i % 2 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
    number = "".join(map(str, digits)) + str((10 - total % 10) % 10)
    return " ".join(number[i:i + 4] for i in range(0, 16, 4))


def _rules(router: httpx.Client, project: dict[str, Any], h: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = router.get(f"/v1/projects/{project['id']}/privacy-rules", headers=h, params=params)
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return list(r.json()["data"])


def _create(router: httpx.Client, project: dict[str, Any], h: dict[str, str], name: str,
            rule: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r = router.post(f"/v1/projects/{project['id']}/privacy-rules", headers=h,
                    json={"name": name, "rule": rule, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _ingest(router: httpx.Client, key: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _stored(topo: dict[str, Any], region: str, interaction_id: str) -> dict[str, Any]:
    rows = sql(topo["cells"][region]["database_url"],
               "SELECT content_text, content_json, technical_context, privacy_scope FROM interactions WHERE id = $1",
               uuid.UUID(interaction_id))
    assert len(rows) == 1
    return {k: json.loads(v) if k != "content_text" else v for k, v in rows[0].items()}  # raw JSONB is text


def test_new_projects_start_with_the_default_rules(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    rules = _rules(router, p, admin.h)
    assert sorted(r["name"] for r in rules) == ["bearer", "card", "credentials"]
    for r in rules:
        assert r["enabled"] is True and r["project_id"] == p["id"] and uuid.UUID(r["id"]).version == 7
        assert r["rule"] == {"type": "pattern", "pattern": r["name"], "selector": None,
                             "scope": ["content", "logs", "context", "messages"]}
        assert router.get(f"/v1/projects/{p['id']}/privacy-rules/{r['id']}", headers=admin.h).json() == r


def test_provisioning_again_adds_no_rules(topo: dict[str, Any], router: httpx.Client, admin: Admin) -> None:
    """The router retries provisioning until acknowledged: only the first, creating call adds the defaults."""
    p = admin.project("us-west")
    fresh = uuid7()
    state = Path(topo["cells"]["us-west"]["object_store"][len("file://"):]).parent.parent
    secret = str(json.loads((state / "secrets.json").read_text())["us-west"]).encode()

    def provision(project_id: Any) -> int:
        path = f"/internal/projects/{project_id}"
        with httpx.Client(base_url=topo["cells"]["us-west"]["url"], trust_env=False, timeout=30) as cell:
            body = msgspec.json.encode({"name": "again", "region": "us-west"})
            r = cell.put(path, content=body, headers={"content-type": "application/json",
                                                      **sign(secret, "PUT", path, Actor(kind="router"), body=body)})
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(provision, [p["id"]] * 4 + [fresh] * 4))
    assert codes == [200] * 8
    dsn = topo["cells"]["us-west"]["database_url"]
    for project_id in (uuid.UUID(p["id"]), fresh):
        names = [r["name"] for r in sql(dsn, "SELECT name FROM privacy_rules WHERE project_id = $1 ORDER BY name",
                                        project_id)]
        assert names == ["bearer", "card", "credentials"]


def test_an_interaction_is_stored_redacted_everywhere(router: httpx.Client, admin: Admin,
                                                      topo: dict[str, Any]) -> None:
    region = "us-west"
    p = admin.project(region)
    key = admin.key(p, ["ingest"])
    email_rule = _create(router, p, admin.h, "email", {"type": "pattern", "pattern": "email"})
    tag = secrets.token_hex(6)
    email, card = f"canary.{tag}@example.com", _card()
    token, token2, password = f"tok{tag}{secrets.token_hex(8)}", f"tk2{tag}{secrets.token_hex(8)}", f"pw{tag}x"
    body = _ingest(
        router, key,
        content={"text": f"Reach me at {email}", "title": f"Paid with {card}",
                 "annotations": [{"note": f"again {email}"}]},
        logs={
            "console": [{"level": "log", "message": f"user {email} paid with {card}", "timestamp": 1},
                        {"level": "warn", "message": f"retrying with Bearer {token2}"}],
            "network": [{"method": "POST", "url": f"https://shop.test/login?user=x&password={password}&next=/",
                         "status": 200, "duration": 12,
                         "request_headers": {"Authorization": f"Bearer {token}", "Accept": "application/json"},
                         "response_headers": {"Set-Cookie": f"sid={token}; HttpOnly"}}],
            "errors": [{"message": f"failed for {email}", "stack": f"at pay ({card.replace(' ', '')})",
                        "filename": "app.js", "line": 3}],
        },
        technical_context={"url": f"https://shop.test/cb?access_token={token}", "user": email},
    )
    # What the API returns is redacted ...
    got = router.get(f"/v1/projects/{p['id']}/interactions/{body['id']}", headers=admin.h).json()
    assert got["content"] == {"text": "Reach me at [redacted:email]", "title": "Paid with [redacted:card]",
                              "annotations": [{"note": "again [redacted:email]"}]}
    assert [c["message"] for c in got["logs"]["console"]] == [
        "user [redacted:email] paid with [redacted:card]", "retrying with Bearer [redacted:bearer]"]
    net = got["logs"]["network"][0]
    assert net["url"] == "https://shop.test/login?user=x&password=[redacted:credentials]&next=/"
    assert net["request_headers"] == {"Authorization": "[redacted:credentials]", "Accept": "application/json"}
    assert net["response_headers"] == {"Set-Cookie": "[redacted:credentials]"}
    assert got["logs"]["errors"][0] == {"message": "failed for [redacted:email]", "stack": "at pay ([redacted:card])",
                                        "filename": "app.js", "line": 3}
    assert got["technical_context"] == {"url": "https://shop.test/cb?access_token=[redacted:credentials]",
                                        "user": "[redacted:email]"}
    # ... and so is every byte the cell stored: no table holds any raw value.
    dsn = topo["cells"][region]["database_url"]
    for needle in (email, card, card.replace(" ", ""), token, token2, password, tag):
        assert _db_hits(dsn, needle) == {}, needle
    stored = _stored(topo, region, body["id"])
    assert stored["content_text"] == "Reach me at [redacted:email]"
    # The report says which rule redacted how much, where; never what.
    by_name = {e["rule"]: e for e in stored["privacy_scope"]["redactions"].values()}
    assert by_name == {
        "email": {"rule": "email", "matches": 5, "scopes": {"content": 2, "logs": 2, "context": 1}},
        "card": {"rule": "card", "matches": 3, "scopes": {"content": 1, "logs": 2}},
        "credentials": {"rule": "credentials", "matches": 4, "scopes": {"logs": 3, "context": 1}},
        "bearer": {"rule": "bearer", "matches": 1, "scopes": {"logs": 1}},
    }
    assert stored["privacy_scope"]["total"] == 13
    ids = {r["name"]: r["id"] for r in _rules(router, p, admin.h)}
    assert set(stored["privacy_scope"]["redactions"]) == set(ids.values()) and ids["email"] == email_rule["id"]
    # An interaction with nothing to redact carries no report; a retry stores nothing new.
    clean = _ingest(router, key, id=str(uuid7()), content={"text": "all good"})
    assert _stored(topo, region, clean["id"])["privacy_scope"] == {}
    again = router.post("/v1/ingest/interactions", headers=key["h"],
                        json={"type": "bug", "id": clean["id"], "content": {"text": f"now with {email}"}})
    assert again.status_code == 200 and again.json()["content"] == {"text": "all good"}
    assert _db_hits(dsn, email) == {}


def test_custom_regex_rule_applies_to_the_next_ingest_until_disabled(router: httpx.Client, admin: Admin,
                                                                     topo: dict[str, Any]) -> None:
    region = "eu-west"
    p = admin.project(region)
    key = admin.key(p, ["ingest"])
    admin_key = admin.key(p, ["admin"])
    badge = f"EMP-{secrets.randbelow(900000) + 100000}"
    content = {"text": f"badge {badge}"}
    logs = {"console": [{"level": "log", "message": f"badge {badge}"}]}
    assert _ingest(router, key, content=content)["content"] == content  # no such rule yet

    rule = _create(router, p, admin_key["h"], "employee id",
                   {"type": "pattern", "pattern": r"regex:\bEMP-\d{6}\b", "scope": ["content"]})
    assert rule["enabled"] is True and rule["name"] == "employee id"
    assert rule["rule"] == {"type": "pattern", "pattern": r"regex:\bEMP-\d{6}\b", "selector": None,
                            "scope": ["content"]}
    one = _ingest(router, key, content=content, logs=logs)
    assert one["content"] == {"text": "badge [redacted:employee id]"}
    stored_logs = router.get(f"/v1/projects/{p['id']}/interactions/{one['id']}", headers=admin.h).json()["logs"]
    assert stored_logs["console"][0]["message"] == f"badge {badge}"  # scope is content only
    assert _stored(topo, region, one["id"])["privacy_scope"]["redactions"] == {
        rule["id"]: {"rule": "employee id", "matches": 1, "scopes": {"content": 1}}}

    # Disabled: it stops; re-enabled with a wider scope and a new name: it applies there too.
    r = router.patch(f"/v1/projects/{p['id']}/privacy-rules/{rule['id']}", headers=admin.h, json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert datetime.fromisoformat(r.json()["updated_at"]) > datetime.fromisoformat(rule["updated_at"])
    assert _ingest(router, key, content=content)["content"] == content
    r = router.patch(f"/v1/projects/{p['id']}/privacy-rules/{rule['id']}", headers=admin.h, json={
        "enabled": True, "name": "badge",
        "rule": {"type": "pattern", "pattern": r"regex:EMP-(?P<secret>\d{6})", "scope": ["content", "logs"]}})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "badge" and r.json()["rule"]["scope"] == ["content", "logs"]
    two = _ingest(router, key, content=content, logs=logs)
    assert two["content"] == {"text": "badge EMP-[redacted:badge]"}
    two_logs = router.get(f"/v1/projects/{p['id']}/interactions/{two['id']}", headers=admin.h).json()["logs"]
    assert two_logs["console"][0]["message"] == "badge EMP-[redacted:badge]"
    listed = _rules(router, p, admin.h, enabled="false")
    assert listed == []
    # Deleted: gone, and it stops.
    assert router.delete(f"/v1/projects/{p['id']}/privacy-rules/{rule['id']}", headers=admin.h).status_code == 204
    problem(router.get(f"/v1/projects/{p['id']}/privacy-rules/{rule['id']}", headers=admin.h), 404)
    problem(router.delete(f"/v1/projects/{p['id']}/privacy-rules/{rule['id']}", headers=admin.h), 404)
    assert _ingest(router, key, content=content)["content"] == content

    # Every change is audited, by whom, without the pattern or anything it matched.
    audit = sql(topo["cells"][region]["database_url"],
                "SELECT action, actor_type, actor_id, target_id, meta::text AS meta FROM audit_logs"
                " WHERE project_id = $1 AND target_type = 'privacy_rule' ORDER BY created_at, id",
                uuid.UUID(p["id"]))
    assert [(a["action"], a["actor_type"]) for a in audit] == [
        ("privacy_rule.created", "api"), ("privacy_rule.updated", "admin"), ("privacy_rule.updated", "admin"),
        ("privacy_rule.deleted", "admin")]
    assert audit[0]["actor_id"] == admin_key["key_prefix"] and {a["target_id"] for a in audit} == {rule["id"]}
    for a in audit:
        assert "EMP" not in a["meta"] and badge not in a["meta"] and '"regex"' in a["meta"]


def test_selectors_and_flags_in_the_ingest_config(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    ingest = admin.key(p, ["ingest"])
    r = router.get("/v1/ingest/config", headers=ingest["h"])
    assert r.status_code == 200 and r.json() == {"privacy": {"selectors": []}, "flags": {}}
    on = _create(router, p, admin.h, "password inputs", {"type": "selector", "selector": "input[type=password]"})
    assert on["rule"] == {"type": "selector", "pattern": None, "selector": "input[type=password]",
                          "scope": ["content", "logs", "context", "messages"]}
    _create(router, p, admin.h, "private blocks", {"type": "selector", "selector": "[data-private] > *"},
            enabled=False)
    second = _create(router, p, admin.h, "card fields", {"type": "selector", "selector": ".cc-number, #cvc"})
    assert router.post(f"/v1/projects/{p['id']}/feature-flags", headers=admin.h,
                       json={"flag": "new-checkout", "enabled": True}).status_code == 201
    assert router.get("/v1/ingest/config", headers=ingest["h"]).json() == {
        "privacy": {"selectors": ["input[type=password]", ".cc-number, #cvc"]}, "flags": {"new-checkout": True}}
    # Selector rules mask on the client only: they do not touch server-side text.
    assert _ingest(router, ingest, content={"text": "input[type=password]"})["content"]["text"] == \
        "input[type=password]"
    router.patch(f"/v1/projects/{p['id']}/privacy-rules/{second['id']}", headers=admin.h, json={"enabled": False})
    assert router.get("/v1/ingest/config", headers=ingest["h"]).json()["privacy"] == {
        "selectors": ["input[type=password]"]}
    # Browser-safe keys only; the key names the project.
    problem(router.get("/v1/ingest/config", headers=admin.key(p, ["read", "write", "admin"])["h"]), 403)
    problem(router.get("/v1/ingest/config"), 401)
    other = admin.project("eu-west")
    assert router.get("/v1/ingest/config", headers=admin.key(other, ["ingest"])["h"]).json() == {
        "privacy": {"selectors": []}, "flags": {}}


def test_roles_validation_and_other_projects(router: httpx.Client, admin: Admin) -> None:
    a, b = admin.project("us-west"), admin.project("eu-west")
    base = f"/v1/projects/{a['id']}/privacy-rules"
    rule = {"type": "pattern", "pattern": "email"}
    mine = _create(router, a, admin.h, "email", rule)
    theirs = _rules(router, b, admin.h)[0]

    # Viewers and read keys read; agents and write keys do not change privacy; ingest keys do not manage.
    viewer, agent = admin.member(a, "viewer"), admin.member(a, "agent")
    read_key, write_key, ingest_key = admin.key(a, ["read"]), admin.key(a, ["write"]), admin.key(a, ["ingest"])
    for h in (viewer.h, agent.h, read_key["h"], write_key["h"]):
        assert len(_rules(router, a, h)) == 4
        assert router.get(f"{base}/{mine['id']}", headers=h).json()["id"] == mine["id"]
        problem(router.post(base, headers=h, json={"name": "x", "rule": rule}), 403)
        problem(router.patch(f"{base}/{mine['id']}", headers=h, json={"enabled": False}), 403)
        problem(router.delete(f"{base}/{mine['id']}", headers=h), 403)
    problem(router.get(base, headers=ingest_key["h"]), 403)
    problem(router.post(base, headers=ingest_key["h"], json={"name": "x", "rule": rule}), 403)
    assert router.get(f"{base}/{mine['id']}", headers=admin.h).json()["enabled"] is True

    # Invalid input: 422 with a pointer to the field.
    cases: list[tuple[dict[str, Any], str]] = [
        # What RE2 (linear-time matching) cannot run is refused when the rule is created.
        ({"name": "x", "rule": {"type": "pattern", "pattern": r"regex:(a)\1"}}, "/rule/pattern"),
        ({"name": "x", "rule": {"type": "pattern", "pattern": r"regex:(?<=token=)\w+"}}, "/rule/pattern"),
        ({"name": "x", "rule": {"type": "pattern", "pattern": r"regex:secret(?=:)"}}, "/rule/pattern"),
        ({"name": "x", "rule": {"type": "pattern", "pattern": "regex:" + "a" * 501}}, "/rule/pattern"),
        ({"name": "x", "rule": {"type": "pattern", "pattern": "regex:([a-z"}}, "/rule/pattern"),
        ({"name": "x", "rule": {"type": "pattern", "pattern": "phone"}}, "/rule/pattern"),
        ({"name": "x", "rule": {"type": "pattern"}}, "/rule/pattern"),
        ({"name": "x", "rule": {"type": "pattern", "pattern": "card", "selector": "input"}}, "/rule/selector"),
        ({"name": "x", "rule": {"type": "selector", "selector": "a { color: red }"}}, "/rule/selector"),
        ({"name": "x", "rule": {"type": "selector", "selector": "input", "pattern": "card"}}, "/rule/pattern"),
        ({"name": "x", "rule": {"type": "mask", "pattern": "card"}}, "/rule/type"),
        ({"name": "x", "rule": {"type": "pattern", "pattern": "card", "scope": []}}, "/rule/scope"),
        ({"name": "x", "rule": {"type": "pattern", "pattern": "card", "scope": ["everywhere"]}}, "/rule/scope/0"),
        ({"name": "bad]name", "rule": rule}, "/name"),
        ({"name": "", "rule": rule}, "/name"),
        ({"name": "x"}, "/rule"),
    ]
    for body, pointer in cases:
        errors = problem(router.post(base, headers=admin.h, json=body), 422)["errors"]
        assert [e["pointer"] for e in errors] == [pointer], (body, errors)
    problem(router.patch(f"{base}/{mine['id']}", headers=admin.h, json={}), 422)
    bad = router.patch(f"{base}/{mine['id']}", headers=admin.h, json={"rule": {"type": "pattern", "pattern": "x"}})
    assert [e["pointer"] for e in problem(bad, 422)["errors"]] == ["/rule/pattern"]
    problem(router.get(base, headers=admin.h, params={"limit": 0}), 422)
    problem(router.get(base, headers=admin.h, params={"cursor": "garbage"}), 422)

    # Another project's rules: 404 through A's path, and A's keys cannot reach B at all.
    admin_key = admin.key(a, ["admin"])
    for h in (admin.h, admin_key["h"]):
        problem(router.get(f"{base}/{theirs['id']}", headers=h), 404)
        problem(router.patch(f"{base}/{theirs['id']}", headers=h, json={"enabled": False}), 404)
        problem(router.delete(f"{base}/{theirs['id']}", headers=h), 404)
    b_base = f"/v1/projects/{b['id']}/privacy-rules"
    for method, path, body in (("GET", b_base, None), ("POST", b_base, {"name": "x", "rule": rule}),
                               ("GET", f"{b_base}/{theirs['id']}", None),
                               ("PATCH", f"{b_base}/{theirs['id']}", {"enabled": False}),
                               ("DELETE", f"{b_base}/{theirs['id']}", None)):
        problem(router.request(method, path, headers=admin_key["h"], json=body), 404)
    stranger = Admin(router)
    problem(router.get(b_base, headers=stranger.h), 404)
    assert router.get(f"{b_base}/{theirs['id']}", headers=admin.h).json() == theirs


def test_list_pages_with_cursors(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    for i in range(4):
        _create(router, p, admin.h, f"sel {i}", {"type": "selector", "selector": f".s{i}"}, enabled=i % 2 == 0)
    seen: list[str] = []
    cursor = None
    while True:
        r = router.get(f"/v1/projects/{p['id']}/privacy-rules", headers=admin.h,
                       params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200 and len(r.json()["data"]) <= 2
        seen += [x["name"] for x in r.json()["data"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen[:4] == ["sel 3", "sel 2", "sel 1", "sel 0"]
    assert sorted(seen[4:]) == ["bearer", "card", "credentials"] and len(seen) == 7
    assert [x["name"] for x in _rules(router, p, admin.h, enabled="false")] == ["sel 3", "sel 1"]
