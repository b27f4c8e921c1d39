"""Webhooks through the router: `whsec_` secrets shown once and sealed at rest, the SSRF guard, test deliveries."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook as Receiver

from cell.webhooks import signing_secret
from common.ids import uuid7
from common.pg import create_pool
from relay.devstack import DevStack
from tests.conftest import Admin, problem, sql
from tests.e2e.test_integrations import assert_nowhere, cell_settings, member

EVENTS = ["interaction.created", "vote.created"]


def _create(router: httpx.Client, h: dict[str, str], project: dict[str, Any], url: str = "http://127.0.0.1:9/hook",
            events: list[str] | None = None) -> httpx.Response:
    return router.post(f"/v1/projects/{project['id']}/webhooks", headers=h,
                       json={"url": url, "events": events or EVENTS})


def _opened(stack: DevStack, topo: dict[str, Any], region: str, project_id: str, webhook_id: str) -> str | None:
    """The secret as the delivery worker of the region opens it."""
    settings = cell_settings(stack, topo, region)

    async def run() -> str | None:
        pool = await create_pool(settings.database_url, 2)
        try:
            return await signing_secret(pool, settings, uuid.UUID(project_id), uuid.UUID(webhook_id))
        finally:
            await pool.close()

    return asyncio.run(run())


def test_create_shows_the_secret_once_and_seals_it(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                                   stack: DevStack) -> None:
    p = admin.project("us-west")
    r = _create(router, admin.h, p, events=["vote.created", "interaction.created", "vote.created"])
    assert r.status_code == 201, r.text
    hook = r.json()
    assert set(hook) == {"id", "url", "events", "secret", "enabled", "created_at", "updated_at"}
    assert hook["url"] == "http://127.0.0.1:9/hook" and hook["events"] == EVENTS and hook["enabled"] is True
    secret = hook["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    # A receiver verifies what is signed with it, per the Standard Webhooks spec.
    receiver = Receiver(secret)
    now = datetime.now(UTC)
    payload = '{"type":"webhook.test"}'
    signature = receiver.sign("msg_1", now, payload)
    assert receiver.verify(payload, {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
                                     "webhook-signature": signature}) == {"type": "webhook.test"}

    base = f"/v1/projects/{p['id']}/webhooks"
    listed = router.get(base, headers=admin.h).json()
    assert listed["next_cursor"] is None and [w["id"] for w in listed["data"]] == [hook["id"]]
    assert "secret" not in listed["data"][0]
    one = router.get(f"{base}/{hook['id']}", headers=admin.h).json()
    assert "secret" not in one and one == listed["data"][0]

    # At rest the secret is sealed; no store or log shows it; the worker opens it.
    stored = sql(topo["cells"]["us-west"]["database_url"], "SELECT secret FROM webhooks WHERE id = $1", hook["id"])
    assert stored[0]["secret"].startswith("v1:")
    assert_nowhere(topo, stack, secret.removeprefix("whsec_"))
    assert _opened(stack, topo, "us-west", p["id"], hook["id"]) == secret

    # Changes keep the secret; a rotation replaces it and shows the new one once.
    r = router.patch(f"{base}/{hook['id']}", headers=admin.h,
                     json={"events": ["message.created"], "enabled": False, "url": "https://1.1.1.1/hooks"})
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["events"], changed["enabled"], changed["url"]) == (["message.created"], False,
                                                                        "https://1.1.1.1/hooks")
    assert "secret" not in changed
    assert datetime.fromisoformat(changed["updated_at"]) > datetime.fromisoformat(hook["updated_at"])
    problem(router.patch(f"{base}/{hook['id']}", headers=admin.h, json={}), 422)
    rotated = router.post(f"{base}/{hook['id']}/rotate-secret", headers=admin.h)
    assert rotated.status_code == 200 and rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != secret
    assert _opened(stack, topo, "us-west", p["id"], hook["id"]) == rotated.json()["secret"]
    assert_nowhere(topo, stack, rotated.json()["secret"].removeprefix("whsec_"))

    # A test delivery is queued for the delivery worker; nothing is sent from the API.
    r = router.post(f"{base}/{hook['id']}/test", headers=admin.h)
    assert r.status_code == 202, r.text
    delivery = r.json()
    assert (delivery["event"], delivery["status"], delivery["attempts"]) == ("webhook.test", "pending", 0)
    assert delivery["webhook_id"] == hook["id"] and delivery["payload"]["type"] == "webhook.test"
    assert delivery["payload"]["data"]["webhook_id"] == hook["id"] and delivery["next_attempt_at"]
    rows = sql(topo["cells"]["us-west"]["database_url"],
               "SELECT project_id::text, status, event FROM webhook_deliveries WHERE webhook_id = $1", hook["id"])
    assert [tuple(row) for row in rows] == [(p["id"], "pending", "webhook.test")]
    history = router.get(f"{base}/{hook['id']}/deliveries", headers=admin.h).json()
    assert [d["id"] for d in history["data"]] == [delivery["id"]] and history["data"][0]["status"] == "pending"

    # Deleting removes the webhook and its queued deliveries.
    assert router.delete(f"{base}/{hook['id']}", headers=admin.h).status_code == 204
    problem(router.get(f"{base}/{hook['id']}", headers=admin.h), 404)
    problem(router.delete(f"{base}/{hook['id']}", headers=admin.h), 404)
    problem(router.post(f"{base}/{hook['id']}/test", headers=admin.h), 404)
    assert not sql(topo["cells"]["us-west"]["database_url"],
                   "SELECT 1 FROM webhook_deliveries WHERE webhook_id = $1", hook["id"])
    actions = [e["action"] for e in router.get(f"/v1/projects/{p['id']}/audit-logs", headers=admin.h,
                                                params={"target_id": hook["id"]}).json()["data"]]
    assert actions == ["webhook.deleted", "webhook.tested", "webhook.secret_rotated", "webhook.updated",
                       "webhook.created"]


def test_ssrf_guard_and_validation(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    for url in ("http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://192.168.1.1:8080/x",
                "http://172.16.5.4/", "http://[fd00::1]/", "http://[::ffff:169.254.169.254]/",
                "http://[::ffff:10.0.0.1]/", "http://0.0.0.0:8101/", "http://224.0.0.1/", "http://100.64.1.1/",
                "https://user:pass@1.1.1.1/", "ftp://1.1.1.1/", "file:///etc/passwd", "not a url",
                "http://no-such-host.invalid/"):
        body = problem(_create(router, admin.h, p, url), 422)
        assert body["errors"][0]["pointer"] == "/url", (url, body)
    # relay dev lets the operator's loopback receivers through; public addresses always pass.
    assert _create(router, admin.h, p, "http://localhost:9/hook").status_code == 201
    ok = _create(router, admin.h, p, "https://1.1.1.1/hook")
    assert ok.status_code == 201
    body = problem(router.patch(f"/v1/projects/{p['id']}/webhooks/{ok.json()['id']}", headers=admin.h,
                                json={"url": "http://169.254.169.254/"}), 422)
    assert body["errors"][0]["pointer"] == "/url"
    assert router.get(f"/v1/projects/{p['id']}/webhooks/{ok.json()['id']}",
                      headers=admin.h).json()["url"] == "https://1.1.1.1/hook"
    assert problem(_create(router, admin.h, p, events=["interaction.deleted"]), 422)["errors"][0]["pointer"] == (
        "/events/0")
    assert problem(router.post(f"/v1/projects/{p['id']}/webhooks", headers=admin.h,
                               json={"url": "https://1.1.1.1/", "events": []}), 422)["errors"][0]["pointer"] == (
        "/events")
    assert problem(router.post(f"/v1/projects/{p['id']}/webhooks", headers=admin.h,
                               json={"events": EVENTS}), 422)["errors"][0]["pointer"] == "/url"
    problem(router.get(f"/v1/projects/{p['id']}/webhooks?cursor=nope", headers=admin.h), 422)
    assert len(router.get(f"/v1/projects/{p['id']}/webhooks", headers=admin.h).json()["data"]) == 2


def test_roles_scopes_and_tenancy(router: httpx.Client, admin: Admin) -> None:
    a, b = admin.project("us-west"), admin.project("eu-west")
    hook = _create(router, admin.key(a, ["admin"])["h"], a).json()
    b_hook = _create(router, admin.h, b).json()
    base = f"/v1/projects/{a['id']}/webhooks"
    one = f"{base}/{hook['id']}"
    viewer, agent = member(router, admin, a, "viewer"), member(router, admin, a, "agent")
    read_key, write_key = admin.key(a, ["read"]), admin.key(a, ["write"])
    for h in (viewer.h, read_key["h"], agent.h, write_key["h"]):
        assert [w["id"] for w in router.get(base, headers=h).json()["data"]] == [hook["id"]]
        assert router.get(one, headers=h).json()["url"] == hook["url"]
        assert router.get(f"{one}/deliveries", headers=h).status_code == 200
    for h in (viewer.h, agent.h, read_key["h"], write_key["h"]):
        problem(_create(router, h, a), 403)
        problem(router.patch(one, headers=h, json={"enabled": False}), 403)
        problem(router.delete(one, headers=h), 403)
        problem(router.post(f"{one}/test", headers=h), 403)
        problem(router.post(f"{one}/rotate-secret", headers=h), 403)
    # A's credentials on B's webhook, B's credentials on A's: 404, never which; and unknown ids are 404 too.
    b_admin = admin.key(b, ["admin"])
    for h, project, webhook_id in ((b_admin["h"], a, hook["id"]), (Admin(router).h, a, hook["id"]),
                                   (admin.key(a, ["admin"])["h"], b, b_hook["id"])):
        path = f"/v1/projects/{project['id']}/webhooks"
        problem(router.get(path, headers=h), 404)
        problem(_create(router, h, project), 404)
        for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test"),
                               ("POST", "/rotate-secret"), ("GET", "/deliveries")):
            kwargs: dict[str, Any] = {"json": {"enabled": False}} if method == "PATCH" else {}
            problem(router.request(method, f"{path}/{webhook_id}{suffix}", headers=h, **kwargs), 404)
    a_admin = admin.key(a, ["admin"])
    for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test"), ("GET", "/deliveries")):
        kwargs = {"json": {"enabled": False}} if method == "PATCH" else {}
        problem(router.request(method, f"{base}/{b_hook['id']}{suffix}", headers=a_admin["h"], **kwargs), 404)
        problem(router.request(method, f"{base}/{uuid7()}{suffix}", headers=a_admin["h"], **kwargs), 404)
    assert router.get(one, headers=admin.h).json()["enabled"] is True
    assert router.get(f"/v1/projects/{b['id']}/webhooks/{b_hook['id']}", headers=admin.h).json()["enabled"] is True


def test_concurrent_creations_respect_the_limit(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("eu-west")
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda i: _create(router, admin.h, p, f"https://1.1.1.1/hook/{i}"), range(25)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 20 + [409] * 5, codes
    assert all(r.json()["detail"] == "a project has at most 20 webhooks" for r in responses if r.status_code == 409)
    count = sql(topo["cells"]["eu-west"]["database_url"], "SELECT count(*) AS n FROM webhooks WHERE project_id = $1",
                p["id"])
    assert count[0]["n"] == 20
    # Keyset pages walk all of them exactly once, newest first.
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = router.get(f"/v1/projects/{p['id']}/webhooks", headers=admin.h, params=params).json()
        seen += [w["id"] for w in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    made = [r.json() for r in responses if r.status_code == 201]
    assert seen == [w["id"] for w in sorted(made, key=lambda w: (datetime.fromisoformat(w["created_at"]), w["id"]),
                                            reverse=True)]
