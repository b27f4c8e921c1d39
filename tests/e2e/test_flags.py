"""Feature flags end to end: management through the router, evaluation for SDKs, roles and tenancy."""

from __future__ import annotations

import concurrent.futures
import uuid
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import Admin, problem, sql


def _flags(router: httpx.Client, key: dict[str, Any]) -> dict[str, bool]:
    r = router.get("/v1/ingest/flags", headers=key["h"])
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"flags"}
    return dict(r.json()["flags"])


def test_flag_lifecycle_and_evaluation(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    region = "eu-west"
    p = admin.project(region)
    base = f"/v1/projects/{p['id']}/feature-flags"
    ingest = admin.key(p, ["ingest"])
    assert _flags(router, ingest) == {}

    r = router.post(base, headers=admin.h, json={"flag": "new-checkout", "enabled": True})
    assert r.status_code == 201, r.text
    flag = r.json()
    assert flag["flag"] == "new-checkout" and flag["enabled"] is True and flag["project_id"] == p["id"]
    assert uuid.UUID(flag["id"]).version == 7 and flag["created_at"] == flag["updated_at"]
    off = router.post(base, headers=admin.h, json={"flag": "dark_mode"}).json()
    assert off["enabled"] is False  # flags start off unless asked
    assert _flags(router, ingest) == {"new-checkout": True, "dark_mode": False}
    assert router.get(f"{base}/{flag['id']}", headers=admin.h).json() == flag
    assert [f["flag"] for f in router.get(base, headers=admin.h).json()["data"]] == ["dark_mode", "new-checkout"]
    assert [f["flag"] for f in router.get(base, headers=admin.h, params={"enabled": "true"}).json()["data"]] == [
        "new-checkout"]

    # Duplicates conflict, on create and on rename.
    assert "new-checkout" in problem(router.post(base, headers=admin.h, json={"flag": "new-checkout"}), 409)["detail"]
    problem(router.patch(f"{base}/{off['id']}", headers=admin.h, json={"flag": "new-checkout"}), 409)

    # Toggle and rename: SDKs see it at once.
    r = router.patch(f"{base}/{flag['id']}", headers=admin.h, json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert datetime.fromisoformat(r.json()["updated_at"]) > datetime.fromisoformat(flag["updated_at"])
    r = router.patch(f"{base}/{off['id']}", headers=admin.h, json={"flag": "dark-mode", "enabled": True})
    assert r.status_code == 200 and (r.json()["flag"], r.json()["enabled"]) == ("dark-mode", True)
    assert _flags(router, ingest) == {"new-checkout": False, "dark-mode": True}

    assert router.delete(f"{base}/{flag['id']}", headers=admin.h).status_code == 204
    problem(router.get(f"{base}/{flag['id']}", headers=admin.h), 404)
    problem(router.patch(f"{base}/{flag['id']}", headers=admin.h, json={"enabled": True}), 404)
    problem(router.delete(f"{base}/{flag['id']}", headers=admin.h), 404)
    assert _flags(router, ingest) == {"dark-mode": True}
    # The name is free again.
    assert router.post(base, headers=admin.h, json={"flag": "new-checkout"}).status_code == 201

    # Audited in the same transaction, with who did it.
    audit = sql(topo["cells"][region]["database_url"],
                "SELECT action, actor_type, actor_id, target_id FROM audit_logs"
                " WHERE project_id = $1 AND target_type = 'feature_flag' ORDER BY created_at, id", uuid.UUID(p["id"]))
    assert [a["action"] for a in audit] == [
        "feature_flag.created", "feature_flag.created", "feature_flag.updated", "feature_flag.updated",
        "feature_flag.deleted", "feature_flag.created"]
    assert {(a["actor_type"], a["actor_id"]) for a in audit} == {("admin", admin.user["id"])}
    assert audit[0]["target_id"] == flag["id"]


def test_validation(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    base = f"/v1/projects/{p['id']}/feature-flags"
    for body, pointer in (({"flag": ""}, "/flag"), ({"flag": "has space"}, "/flag"), ({"flag": "x" * 101}, "/flag"),
                          ({"flag": "-leading"}, "/flag"), ({}, "/flag"), ({"flag": "ok", "enabled": "yes"},
                                                                          "/enabled")):
        errors = problem(router.post(base, headers=admin.h, json=body), 422)["errors"]
        assert [e["pointer"] for e in errors] == [pointer], (body, errors)
    made = router.post(base, headers=admin.h, json={"flag": "a.b:c_d-" + "e" * 92}).json()
    assert len(made["flag"]) == 100
    problem(router.patch(f"{base}/{made['id']}", headers=admin.h, json={}), 422)
    errors = problem(router.patch(f"{base}/{made['id']}", headers=admin.h, json={"flag": "no/slash"}), 422)["errors"]
    assert [e["pointer"] for e in errors] == ["/flag"]
    problem(router.get(base, headers=admin.h, params={"limit": 201}), 422)


def test_concurrent_creates_of_one_name_make_one_flag(router: httpx.Client, admin: Admin,
                                                      topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    base = f"/v1/projects/{p['id']}/feature-flags"

    def create(_: int) -> int:
        return router.post(base, headers=admin.h, json={"flag": "race", "enabled": True}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(create, range(8)))
    assert codes == [201] + [409] * 7
    dsn = topo["cells"]["us-west"]["database_url"]
    assert sql(dsn, "SELECT count(*) AS n FROM feature_flags WHERE project_id = $1", uuid.UUID(p["id"]))[0]["n"] == 1
    assert sql(dsn, "SELECT count(*) AS n FROM audit_logs WHERE project_id = $1 AND action = 'feature_flag.created'",
               uuid.UUID(p["id"]))[0]["n"] == 1


def test_pages_with_cursors(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    base = f"/v1/projects/{p['id']}/feature-flags"
    for i in range(5):
        assert router.post(base, headers=admin.h, json={"flag": f"f{i}", "enabled": i % 2 == 0}).status_code == 201
    seen, cursor, pages = [], None, 0
    while True:
        r = router.get(base, headers=admin.h, params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [f["flag"] for f in r["data"]]
        pages += 1
        cursor = r["next_cursor"]
        if cursor is None:
            break
    assert seen == ["f4", "f3", "f2", "f1", "f0"] and pages == 3
    problem(router.get(base, headers=admin.h, params={"cursor": "nope"}), 422)


def test_roles_scopes_and_other_projects(router: httpx.Client, admin: Admin) -> None:
    a, b = admin.project("us-west"), admin.project("eu-west")
    base = f"/v1/projects/{a['id']}/feature-flags"
    mine = router.post(base, headers=admin.h, json={"flag": "mine", "enabled": True}).json()
    theirs = router.post(f"/v1/projects/{b['id']}/feature-flags", headers=admin.h,
                         json={"flag": "theirs", "enabled": True}).json()

    # Viewers and read keys read; agents and write keys write; ingest keys only evaluate.
    viewer, agent = admin.member(a, "viewer"), admin.member(a, "agent")
    read_key, write_key, ingest_key = admin.key(a, ["read"]), admin.key(a, ["write"]), admin.key(a, ["ingest"])
    for h in (viewer.h, read_key["h"]):
        assert [f["flag"] for f in router.get(base, headers=h).json()["data"]] == ["mine"]
        assert router.get(f"{base}/{mine['id']}", headers=h).json() == mine
        problem(router.post(base, headers=h, json={"flag": "x"}), 403)
        problem(router.patch(f"{base}/{mine['id']}", headers=h, json={"enabled": False}), 403)
        problem(router.delete(f"{base}/{mine['id']}", headers=h), 403)
    for i, h in enumerate((agent.h, write_key["h"])):
        made = router.post(base, headers=h, json={"flag": f"by-writer-{i}"})
        assert made.status_code == 201, made.text
        assert router.patch(f"{base}/{made.json()['id']}", headers=h, json={"enabled": True}).json()["enabled"]
        assert router.delete(f"{base}/{made.json()['id']}", headers=h).status_code == 204
    for method, path in (("GET", base), ("POST", base), ("GET", f"{base}/{mine['id']}"),
                         ("PATCH", f"{base}/{mine['id']}"), ("DELETE", f"{base}/{mine['id']}")):
        problem(router.request(method, path, headers=ingest_key["h"], json={"enabled": True, "flag": "x"}), 403)
    problem(router.get("/v1/ingest/flags", headers=read_key["h"]), 403)
    problem(router.get("/v1/ingest/flags", headers=write_key["h"]), 403)
    problem(router.get("/v1/ingest/flags"), 401)
    assert _flags(router, ingest_key) == {"mine": True}

    # Another project's flags: 404 through A's path, and A's keys cannot reach B at all.
    for h in (admin.h, write_key["h"]):
        problem(router.get(f"{base}/{theirs['id']}", headers=h), 404)
        problem(router.patch(f"{base}/{theirs['id']}", headers=h, json={"enabled": False}), 404)
        problem(router.delete(f"{base}/{theirs['id']}", headers=h), 404)
    b_base = f"/v1/projects/{b['id']}/feature-flags"
    for method, path, body in (("GET", b_base, None), ("POST", b_base, {"flag": "x"}),
                               ("GET", f"{b_base}/{theirs['id']}", None),
                               ("PATCH", f"{b_base}/{theirs['id']}", {"enabled": False}),
                               ("DELETE", f"{b_base}/{theirs['id']}", None)):
        problem(router.request(method, path, headers=write_key["h"], json=body), 404)
    problem(router.get(b_base, headers=viewer.h), 404)
    assert router.get(f"{b_base}/{theirs['id']}", headers=admin.h).json() == theirs
    assert _flags(router, admin.key(b, ["ingest"])) == {"theirs": True}
