"""The audit log through the router: entries for management writes with the right actor, filters, paging, access.

The log a project's admins read holds the cell's entries (`source`: its region) merged by time with the
router's own (`source: "router"`: the project created, keys created through the router, …)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import Admin, problem
from tests.e2e.test_integrations import member


def _list(router: httpx.Client, h: dict[str, str], project: dict[str, Any], **params: Any) -> httpx.Response:
    return router.get(f"/v1/projects/{project['id']}/audit-logs", headers=h, params=params)


def _entries(router: httpx.Client, h: dict[str, str], project: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    r = _list(router, h, project, **params)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_writes_are_audited_with_their_actor(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    before = datetime.now(UTC) - timedelta(seconds=5)
    key = admin.key(p, ["admin"])
    token = "ghp_" + secrets.token_hex(16)
    assert router.put(f"/v1/projects/{p['id']}/integrations/github", headers=admin.h,
                      json={"config": {"owner": "acme", "repo": "app", "token": token}}).status_code == 201
    hook = router.post(f"/v1/projects/{p['id']}/webhooks", headers=key["h"],
                       json={"url": "https://1.1.1.1/hook", "events": ["vote.created"]}).json()
    assert router.patch(f"/v1/projects/{p['id']}/webhooks/{hook['id']}", headers=key["h"],
                        json={"enabled": False}).status_code == 200

    merged = _entries(router, admin.h, p)
    entries = [e for e in merged if e["source"] == "eu-west"]
    assert [e["action"] for e in entries] == ["webhook.updated", "webhook.created", "integration.created",
                                              "api_key.created"]
    assert [(e["action"], e["actor_id"]) for e in merged if e["source"] == "router"] == [
        ("api_key.created", admin.user["id"]), ("project.created", admin.user["id"])]
    updated, created, integration, key_created = entries
    assert set(updated) == {"id", "actor_type", "actor_id", "action", "target_type", "target_id", "meta",
                            "ip_address", "created_at", "source"}
    # A dashboard user is `admin` with their user id; a key is `api` with its prefix (never the secret).
    assert (integration["actor_type"], integration["actor_id"]) == ("admin", admin.user["id"])
    assert (key_created["actor_type"], key_created["actor_id"]) == ("admin", admin.user["id"])
    assert (key_created["target_type"], key_created["target_id"]) == ("api_key", key["id"])
    for e in (created, updated):
        assert (e["actor_type"], e["actor_id"], e["target_type"], e["target_id"]) == (
            "api", key["key_prefix"], "webhook", hook["id"])
    assert created["meta"] == {"host": "1.1.1.1", "events": ["vote.created"], "enabled": True}
    assert updated["meta"] == {"fields": ["enabled"]}
    assert integration["meta"]["provider"] == "github" and token not in str(entries)
    # The client IP reaches the log truncated to its /24.
    assert all(e["ip_address"] == "127.0.0.0" for e in entries)
    assert all(before < datetime.fromisoformat(e["created_at"]) <= datetime.now(UTC) for e in entries)


def test_filters_and_keyset_paging(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    key = admin.key(p, ["admin"])
    hooks = []
    for i in range(5):
        r = router.post(f"/v1/projects/{p['id']}/webhooks", headers=admin.h if i % 2 else key["h"],
                        json={"url": f"https://1.1.1.1/{i}", "events": ["message.created"]})
        assert r.status_code == 201, r.text
        hooks.append(r.json())
    middle = datetime.now(UTC)
    for hook in hooks[:3]:
        assert router.delete(f"/v1/projects/{p['id']}/webhooks/{hook['id']}", headers=key["h"]).status_code == 204

    everything = _entries(router, admin.h, p)
    assert len(everything) == 11  # the key, 5 webhooks created, 3 deleted; the router's project and key created
    assert [e["action"] for e in _entries(router, admin.h, p, action="webhook.deleted")] == ["webhook.deleted"] * 3
    assert {e["target_id"] for e in _entries(router, admin.h, p, action="webhook.deleted")} == {
        h["id"] for h in hooks[:3]}
    by_user = _entries(router, admin.h, p, actor_type="admin")
    assert sorted(e["action"] for e in by_user) == ["api_key.created"] * 2 + ["project.created"] + [
        "webhook.created"] * 2
    assert _entries(router, admin.h, p, actor_id=admin.user["id"]) == by_user
    by_key = _entries(router, admin.h, p, actor_type="api", actor_id=key["key_prefix"])
    assert sorted(e["action"] for e in by_key) == ["webhook.created"] * 3 + ["webhook.deleted"] * 3
    assert _entries(router, admin.h, p, actor_type="system") == []
    history = _entries(router, admin.h, p, target_type="webhook", target_id=hooks[0]["id"])
    assert [e["action"] for e in history] == ["webhook.deleted", "webhook.created"]
    assert [(e["action"], e["source"]) for e in _entries(router, admin.h, p, target_type="api_key")] == [
        ("api_key.created", "router"), ("api_key.created", "us-west")]
    # Times go in the query unescaped (`:` is legal there): the router's hop re-quotes `%3A`, see the report.
    at = middle.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    later = router.get(f"/v1/projects/{p['id']}/audit-logs?created_after={at}", headers=admin.h).json()["data"]
    assert [e["action"] for e in later] == ["webhook.deleted"] * 3
    earlier = router.get(f"/v1/projects/{p['id']}/audit-logs?created_before={at}", headers=admin.h).json()["data"]
    assert len(earlier) == 8 and {e["id"] for e in earlier} | {e["id"] for e in later} == {
        e["id"] for e in everything}

    # Keyset pages walk every entry once, newest first, also under a filter.
    for params in ({}, {"target_type": "webhook"}):
        seen: list[str] = []
        cursor = None
        while True:
            r = _list(router, admin.h, p, limit=2, **params, **({"cursor": cursor} if cursor else {}))
            page = r.json()
            assert len(page["data"]) <= 2
            seen += [e["id"] for e in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        expected = [e["id"] for e in everything if not params or e["target_type"] == "webhook"]
        assert seen == expected

    problem(_list(router, admin.h, p, actor_type="robot"), 422)
    problem(_list(router, admin.h, p, cursor="garbage"), 422)
    problem(_list(router, admin.h, p, limit=0), 422)
    problem(_list(router, admin.h, p, created_after="yesterday"), 422)


def test_only_admins_read_the_log_of_their_own_project(router: httpx.Client, admin: Admin) -> None:
    a, b = admin.project("us-west"), admin.project("eu-west")
    router.post(f"/v1/projects/{b['id']}/webhooks", headers=admin.h,
                json={"url": "https://1.1.1.1/b", "events": ["vote.created"]})
    viewer, agent, admin_member = (member(router, admin, a, role) for role in ("viewer", "agent", "admin"))
    for h in (viewer.h, agent.h, admin.key(a, ["read"])["h"], admin.key(a, ["write"])["h"],
              admin.key(a, ["ingest"])["h"]):
        problem(_list(router, h, a), 403)
    for h in (admin_member.h, admin.key(a, ["admin"])["h"]):
        entries = _entries(router, h, a)
        assert entries and b["id"] not in str(entries)  # nothing of project B
        assert {e["target_type"] for e in entries} == {"api_key", "project", "invitation"}
        assert {e["target_id"] for e in entries if e["target_type"] == "project"} == {a["id"]}
    for h in (admin.key(b, ["admin"])["h"], Admin(router).h):
        problem(_list(router, h, a), 404)
