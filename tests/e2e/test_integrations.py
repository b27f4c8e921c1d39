"""Integration configs through the router: tokens sealed at rest, masked when shown, admin-only changes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from cell.integrations import GithubConfig, LinearConfig, load_integration
from cell.settings import CellSettings
from common.pg import create_pool
from relay.devstack import DevStack
from tests.conftest import Admin, problem, sql


async def _db_hits(dsn: str, needle: str) -> dict[str, int]:
    """Rows, in every table of every schema but the catalogs, whose text form contains `needle`."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')")
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


def db_hits(dsn: str, needle: str) -> dict[str, int]:
    """Where a database holds `needle`, as a dump would show it."""
    return asyncio.run(_db_hits(dsn, needle))


def file_hits(stack: DevStack, needle: str) -> list[str]:
    """Log and trace files of the running stack that contain `needle`."""
    dirs = [d for d in (stack.log_dir, stack.trace_dir) if d is not None and d.exists()]
    return [str(f) for d in dirs for f in Path(d).rglob("*") if f.is_file() and needle.encode() in f.read_bytes()]


def assert_nowhere(topo: dict[str, Any], stack: DevStack, needle: str) -> None:
    """No database of the topology and no log or trace holds `needle`."""
    for region, cell in topo["cells"].items():
        assert db_hits(cell["database_url"], needle) == {}, region
    assert db_hits(topo["router"]["database_url"], needle) == {}
    assert file_hits(stack, needle) == []


def member(router: httpx.Client, owner: Admin, project: dict[str, Any], role: str) -> Admin:
    """A new dashboard user with `role` in the project."""
    return owner.member(project, role)


def cell_settings(stack: DevStack, topo: dict[str, Any], region: str) -> CellSettings:
    """The settings a worker of that region runs with (its secret key from relay dev's state)."""
    keys = json.loads((stack.state_dir / "secrets.json").read_text())
    cell = topo["cells"][region]
    return CellSettings(region=region, database_url=cell["database_url"], redis_url=cell["redis_url"],
                        object_store=cell["object_store"], hop_secret=keys[region],
                        secret_key=keys[f"{region}:secret_key"], key_pepper=keys["key_pepper"])


def load(stack: DevStack, topo: dict[str, Any], region: str, project_id: str, provider: str) -> Any:
    """What a worker of the region gets from `load_integration`."""
    settings = cell_settings(stack, topo, region)

    async def run() -> Any:
        pool = await create_pool(settings.database_url, 2)
        try:
            return await load_integration(pool, settings, uuid.UUID(project_id), provider)
        finally:
            await pool.close()

    return asyncio.run(run())


def _audit(router: httpx.Client, admin: Admin, project: dict[str, Any], **filters: str) -> list[dict[str, Any]]:
    r = router.get(f"/v1/projects/{project['id']}/audit-logs", params=filters, headers=admin.h)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_config_round_trip_masks_secrets_and_stores_no_token(router: httpx.Client, admin: Admin,
                                                             topo: dict[str, Any], stack: DevStack) -> None:
    p = admin.project("eu-west")
    base = f"/v1/projects/{p['id']}/integrations"
    token = "lin_api_" + secrets.token_hex(20)
    r = router.put(f"{base}/linear", headers=admin.h, json={"config": {"api_key": token, "team_id": "TEAM-1"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["provider"] == "linear" and body["enabled"] is True and body["last_sync_at"] is None
    assert body["config"] == {"api_key": "••••" + token[-4:], "team_id": "TEAM-1", "webhook_secret": None,
                              "api_url": "https://api.linear.app/graphql"}
    assert r.headers["x-relay-region"] == "eu-west"
    assert router.get(f"{base}/linear", headers=admin.h).json() == body

    # Every other provider, each with its own secrets.
    canaries = {name: f"{name}-{secrets.token_hex(16)}" for name in
                ("jira", "github", "github_hook", "slack", "smtp")}
    configs = {
        "jira": {"base_url": "http://127.0.0.1:9/jira", "email": "bot@example.com", "project_key": "WEB",
                 "api_token": canaries["jira"]},
        "github": {"owner": "acme", "repo": "app.web", "token": canaries["github"],
                   "webhook_secret": canaries["github_hook"]},
        "slack": {"webhook_url": f"http://127.0.0.1:9/services/T0/B0/{canaries['slack']}", "channel": "#bugs"},
        "email": {"host": "127.0.0.1", "port": 2525, "from": "relay@example.com", "to": ["team@example.com"],
                  "username": "relay", "password": canaries["smtp"], "security": "none"},
    }
    for provider, config in configs.items():
        r = router.put(f"{base}/{provider}", headers=admin.h, json={"config": config})
        assert r.status_code == 201, (provider, r.text)
    listed = {i["provider"]: i for i in router.get(base, headers=admin.h).json()["data"]}
    assert set(listed) == {"linear", "jira", "github", "slack", "email"}
    assert listed["jira"]["config"]["api_token"] == "••••" + canaries["jira"][-4:]
    assert listed["jira"]["config"]["project_key"] == "WEB" and listed["jira"]["config"]["issue_type"] == "Bug"
    assert listed["github"]["config"]["webhook_secret"] == "••••" + canaries["github_hook"][-4:]
    assert listed["slack"]["config"]["webhook_url"] == "••••" + canaries["slack"][-4:]
    assert listed["email"]["config"]["password"] == "••••" + canaries["smtp"][-4:]
    assert listed["email"]["config"]["from"] == "relay@example.com" and listed["email"]["config"]["port"] == 2525
    assert token not in r.text and all(c not in json.dumps(listed) for c in canaries.values())

    # At rest: sealed values, and no token anywhere a dump (or a log) would show, in any store.
    stored = sql(topo["cells"]["eu-west"]["database_url"],
                 "SELECT config FROM integrations WHERE project_id = $1 AND provider = 'linear'", p["id"])
    config = json.loads(stored[0]["config"])
    assert config["team_id"] == "TEAM-1" and config["api_key"].startswith("v1:")
    for needle in (token, *canaries.values()):
        assert_nowhere(topo, stack, needle)

    # The workers' view: secrets opened.
    linear = load(stack, topo, "eu-west", p["id"], "linear")
    assert isinstance(linear, LinearConfig) and linear.api_key == token and linear.team_id == "TEAM-1"
    github = load(stack, topo, "eu-west", p["id"], "github")
    assert isinstance(github, GithubConfig) and (github.token, github.webhook_secret) == (
        canaries["github"], canaries["github_hook"])

    # Editing without the token (omitted, or sent back masked) keeps it; a new one replaces it.
    r = router.put(f"{base}/linear", headers=admin.h, json={"config": {"team_id": "TEAM-2"}})
    assert r.status_code == 200 and r.json()["config"]["api_key"] == "••••" + token[-4:]
    r = router.put(f"{base}/linear", headers=admin.h,
                   json={"config": {"team_id": "TEAM-3", "api_key": "••••" + token[-4:]}})
    assert r.status_code == 200 and r.json()["config"]["team_id"] == "TEAM-3"
    assert load(stack, topo, "eu-west", p["id"], "linear").api_key == token
    new_token = "lin_api_" + secrets.token_hex(20)
    r = router.put(f"{base}/linear", headers=admin.h, json={"config": {"team_id": "TEAM-3", "api_key": new_token}})
    assert r.status_code == 200 and r.json()["config"]["api_key"] == "••••" + new_token[-4:]
    assert load(stack, topo, "eu-west", p["id"], "linear").api_key == new_token
    assert_nowhere(topo, stack, new_token)

    # Switched off: the workers see nothing; deleted: gone.
    r = router.patch(f"{base}/linear", headers=admin.h, json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["config"]["team_id"] == "TEAM-3"
    assert load(stack, topo, "eu-west", p["id"], "linear") is None
    r = router.put(f"{base}/linear", headers=admin.h, json={"config": {"team_id": "TEAM-4"}})
    assert r.status_code == 200 and r.json()["enabled"] is False  # a config edit does not switch it back on
    assert router.delete(f"{base}/linear", headers=admin.h).status_code == 204
    problem(router.get(f"{base}/linear", headers=admin.h), 404)
    problem(router.delete(f"{base}/linear", headers=admin.h), 404)
    problem(router.patch(f"{base}/linear", headers=admin.h, json={"enabled": True}), 404)
    assert {i["provider"] for i in router.get(base, headers=admin.h).json()["data"]} == {
        "jira", "github", "slack", "email"}

    # Audited with the actor, and without a secret in the entry.
    entries = _audit(router, admin, p, target_type="integration")
    actions = [e["action"] for e in entries if e["meta"].get("provider") == "linear"]
    assert actions == ["integration.deleted", "integration.updated", "integration.updated", "integration.updated",
                       "integration.updated", "integration.updated", "integration.created"]
    created = entries[-1]
    assert created["actor_type"] == "admin" and created["actor_id"] == admin.user["id"]
    assert created["meta"]["secrets_changed"] == ["api_key"] and created["meta"]["fields"] == ["api_key", "team_id"]


def test_invalid_configs_are_422_with_pointers(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    base = f"/v1/projects/{p['id']}/integrations"

    def invalid(provider: str, body: dict[str, Any]) -> str:
        resp = problem(router.put(f"{base}/{provider}", headers=admin.h, json=body), 422)
        pointer: str = resp["errors"][0]["pointer"]
        return pointer

    assert invalid("linear", {"config": {"api_key": "x" * 20}}) == "/config/team_id"
    assert invalid("linear", {"config": {"team_id": "T"}}) == "/config/api_key"  # no token stored yet
    assert invalid("linear", {"config": {"team_id": "T", "api_key": 5}}) == "/config/api_key"
    assert invalid("linear", {"config": {"team_id": "T", "api_key": "k" * 20, "bogus": 1}}).startswith("/config")
    assert invalid("linear", {"config": {"team_id": "T", "api_key": "k" * 20}, "enabled": "yes"}) == "/enabled"
    assert invalid("jira", {"config": {"base_url": "ftp://jira", "email": "a@b.co", "project_key": "WEB",
                                       "api_token": "t" * 20}}) == "/config/base_url"
    assert invalid("jira", {"config": {"base_url": "https://1.1.1.1", "email": "nope", "project_key": "WEB",
                                       "api_token": "t" * 20}}) == "/config/email"
    assert invalid("github", {"config": {"owner": "acme", "repo": "a b", "token": "t" * 20}}) == "/config/repo"
    assert invalid("email", {"config": {"host": "127.0.0.1", "from": "a@b.co", "to": ["x"]}}) == "/config/to/0"
    assert invalid("email", {"config": {"host": "127.0.0.1", "from": "a@b.co", "to": ["c@d.co"],
                                        "port": 70000}}) == "/config/port"
    # Destinations the workers would call are vetted by the SSRF guard.
    jira = {"email": "a@b.co", "project_key": "WEB", "api_token": "t" * 20}
    assert invalid("jira", {"config": {**jira, "base_url": "http://10.0.0.1/"}}) == "/config/base_url"
    assert invalid("slack", {"config": {"webhook_url": "http://169.254.169.254/latest/meta-data/"}}) == (
        "/config/webhook_url")
    assert invalid("github", {"config": {"owner": "acme", "repo": "app", "token": "t" * 20,
                                         "api_url": "http://192.168.0.10/api"}}) == "/config/api_url"
    assert invalid("email", {"config": {"host": "10.1.2.3", "from": "a@b.co", "to": ["c@d.co"]}}) == "/config/host"
    problem(router.put(f"{base}/trello", headers=admin.h, json={"config": {}}), 404)
    problem(router.get(f"{base}/trello", headers=admin.h), 404)
    assert router.get(base, headers=admin.h).json() == {"data": [], "next_cursor": None}


def test_roles_scopes_and_tenancy(router: httpx.Client, admin: Admin) -> None:
    a, b = admin.project("us-west"), admin.project("eu-west")
    body = {"config": {"owner": "acme", "repo": "app", "token": "ghp_" + secrets.token_hex(16)}}
    admin_key = admin.key(a, ["admin"])
    r = router.put(f"/v1/projects/{a['id']}/integrations/github", headers=admin_key["h"], json=body)
    assert r.status_code == 201, r.text
    assert router.put(f"/v1/projects/{b['id']}/integrations/github", headers=admin.h, json=body).status_code == 201
    base = f"/v1/projects/{a['id']}/integrations"
    viewer, agent = member(router, admin, a, "viewer"), member(router, admin, a, "agent")
    read_key, write_key = admin.key(a, ["read"]), admin.key(a, ["write"])
    for h in (viewer.h, read_key["h"], agent.h, write_key["h"]):
        assert router.get(f"{base}/github", headers=h).json()["config"]["token"].startswith("••••")
        assert router.get(base, headers=h).status_code == 200
    for h in (viewer.h, agent.h, read_key["h"], write_key["h"]):
        problem(router.put(f"{base}/github", headers=h, json=body), 403)
        problem(router.patch(f"{base}/github", headers=h, json={"enabled": False}), 403)
        problem(router.delete(f"{base}/github", headers=h), 403)
    problem(router.get(f"{base}/github", headers=admin.key(a, ["ingest"])["h"]), 403)
    # Another project's credentials never reach this one: 404, never which.
    b_admin = admin.key(b, ["admin"])
    stranger = Admin(router)
    for h in (b_admin["h"], stranger.h):
        problem(router.get(base, headers=h), 404)
        problem(router.get(f"{base}/github", headers=h), 404)
        problem(router.put(f"{base}/github", headers=h, json=body), 404)
        problem(router.patch(f"{base}/github", headers=h, json={"enabled": False}), 404)
        problem(router.delete(f"{base}/github", headers=h), 404)
    assert router.get(f"{base}/github", headers=admin.h).json()["enabled"] is True
    entry = _audit(router, admin, a, action="integration.created")[0]
    assert (entry["actor_type"], entry["actor_id"]) == ("api", admin_key["key_prefix"])


def test_concurrent_first_configs_create_one_row(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    url = f"/v1/projects/{p['id']}/integrations/slack"

    def put(i: int) -> httpx.Response:
        return router.put(url, headers=admin.h,
                          json={"config": {"webhook_url": f"http://127.0.0.1:9/hook/{i}-{'x' * 12}"}})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = sorted(r.status_code for r in pool.map(put, range(8)))
    assert codes == [200] * 7 + [201]
    rows = sql(topo["cells"]["us-west"]["database_url"],
               "SELECT count(*) AS n FROM integrations WHERE project_id = $1", p["id"])
    assert rows[0]["n"] == 1
    actions = sorted(e["action"] for e in _audit(router, admin, p, target_type="integration"))
    assert actions == ["integration.created"] + ["integration.updated"] * 7
