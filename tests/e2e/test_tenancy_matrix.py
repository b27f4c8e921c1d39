"""Every cell endpoint, called with project A's credentials against project B's ids, answers 404 — never data.

The routes come from the cell application itself, so an endpoint added later is covered automatically;
an id parameter this test cannot fill makes it fail until the new resource is added to `b_ids` below.
A and B live in the same cell, so only the cell's own `project_id` scoping keeps them apart.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx

from cell.app import AREAS
from common.ids import uuid7
from tests.conftest import Admin

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201, 202), (r.request.url, r.status_code, r.text[:300])
    return dict(r.json()) if r.content else {}


def build_b(router: httpx.Client, admin: Admin, b: dict[str, Any], marker: str) -> dict[str, str]:
    """One resource of every kind in project B; returns path parameter values naming them."""
    ingest = admin.key(b, ["ingest"])
    base = f"/v1/projects/{b['id']}"
    session_id = str(uuid7())
    _ok(router.post("/v1/ingest/sessions", headers=ingest["h"],
                    json={"id": session_id, "user": {"external_id": f"u-{marker}", "email": f"{marker}@b.example"}}))
    interaction = _ok(router.post("/v1/ingest/interactions", headers=ingest["h"], json={
        "type": "bug", "session_id": session_id, "content": {"text": f"B secret {marker}"},
        "user": {"external_id": f"u-{marker}"}}))
    media = _ok(router.post(f"/v1/ingest/interactions/{interaction['id']}/media?kind=screenshot", content=PNG,
                            headers={**ingest["h"], "Content-Type": "image/png"}))
    replay_id = str(uuid7())
    _ok(router.post(f"/v1/ingest/replays/{replay_id}/chunks/0?session_id={session_id}", headers=ingest["h"],
                    json=[{"type": 4, "timestamp": 1700000000000, "data": {"marker": marker}}]))
    item = _ok(router.post(f"{base}/feedback-items", headers=admin.h, json={"title": f"B item {marker}"}))
    _ok(router.post(f"{base}/feedback-items/{item['id']}/links", headers=admin.h,
                    json={"interaction_id": interaction["id"]}))
    roadmap = _ok(router.post(f"{base}/roadmap-items", headers=admin.h, json={"title": f"B road {marker}"}))
    survey = _ok(router.post(f"{base}/surveys", headers=admin.h, json={"name": "b", "definition": {
        "type": "nps", "title": "B", "questions": [{"id": "q", "type": "text", "text": "?"}],
        "thankYouMessage": "t"}}))
    conversation = _ok(router.post("/v1/ingest/conversations", headers=ingest["h"],
                                   json={"session_id": session_id, "body": f"B chat {marker}"}))
    rule = _ok(router.post(f"{base}/privacy-rules", headers=admin.h,
                           json={"name": "b", "rule": {"type": "selector", "selector": ".b"}}))
    flag = _ok(router.post(f"{base}/feature-flags", headers=admin.h, json={"flag": f"b_{marker}", "enabled": True}))
    webhook = _ok(router.post(f"{base}/webhooks", headers=admin.h,
                              json={"url": "http://127.0.0.1:9/hook", "events": ["interaction.created"]}))
    _ok(router.put(f"{base}/integrations/slack", headers=admin.h,
                   json={"config": {"webhook_url": "http://127.0.0.1:9/slack"}}))
    user_id = _ok(router.get(f"{base}/sessions/{session_id}", headers=admin.h))["user_id"]
    export = _ok(router.post(f"{base}/export", headers=admin.h))
    return {
        "interaction_id": interaction["id"], "media_id": media["id"], "replay_id": replay_id,
        "session_id": session_id, "user_id": user_id, "feedback_item_id": item["id"],
        "survey_id": survey["id"], "conversation_id": conversation["id"], "rule_id": rule["id"],
        "flag_id": flag["id"], "webhook_id": webhook["id"], "key_id": ingest["id"], "provider": "slack",
        "index": "0", "item_id:feedback": item["id"], "item_id:roadmap": roadmap["id"],
        "conversation_token": conversation["token"], "export_id": export["id"],
    }


def _routes() -> list[tuple[str, str]]:
    found = []
    for area in AREAS:
        for handler in area.ROUTES:
            for path in handler.paths:
                for method in sorted(handler.http_methods):
                    if path.startswith(("/internal/", "/healthz", "/readyz")):
                        continue
                    found.append((method, path))
    return found


def _fill(path: str, project_id: str, ids: dict[str, str]) -> str | None:
    """The path with B's ids in it (and A's project id); None when it names no resource of B."""
    names = re.findall(r"{(\w+)(?::\w+)?}", path)
    if names == ["project_id"] or not names:
        return None
    out = path
    for name in names:
        if name == "project_id":
            value = project_id
        elif name == "item_id":
            value = ids["item_id:roadmap" if "/roadmap-items/" in path else "item_id:feedback"]
        else:
            assert name in ids, f"{path}: add a B resource for path parameter {name!r} to build_b()"
            value = ids[name]
        out = re.sub(r"{" + name + r"(?::\w+)?}", value, out)
    return out


BODIES: dict[str, Any] = {
    "/links": {"interaction_id": None},
    "/feedback": {"feedback_item_id": None},
    "/votes": {"session_id": None},
    "/responses": {"session_id": None, "responses": {"q": "x"}},
    "/messages": {"body": "A writing into B"},
}


def test_a_cannot_reach_b(router: httpx.Client) -> None:
    admin = Admin(router)  # owns both: A's credentials are real, only the ids are B's
    a, b = admin.project("us-west"), admin.project("us-west")
    marker = secrets.token_hex(6)
    ids = build_b(router, admin, b, marker)
    a_keys = {"admin_session": admin.h, "admin_key": admin.key(a, ["read", "write", "admin"])["h"]}
    a_ingest = admin.key(a, ["ingest"])["h"]
    checked = 0
    for method, template in _routes():
        ingest = template.startswith("/v1/ingest/")
        path = _fill(template, a["id"], ids)
        if path is None:
            continue
        body = next((v for suffix, v in BODIES.items() if template.endswith(suffix)), {})
        body = {k: (v if v is not None else ids.get(k, ids["session_id"])) for k, v in body.items()}
        params = {"session_id": ids["session_id"]} if template.endswith("/votes") and method == "DELETE" else None
        for who, headers in ({"a_ingest": a_ingest} if ingest else a_keys).items():
            h = dict(headers)
            if "/conversations/" in template and ingest:
                h["X-Relay-Conversation-Token"] = ids["conversation_token"]
            kwargs: dict[str, Any] = {"headers": h, "params": params}
            if method in ("POST", "PUT", "PATCH"):
                kwargs["json"] = body
            r = router.request(method, path, **kwargs)
            assert r.status_code in (404, 422), (who, method, template, r.status_code, r.text[:300])
            answer = {k: v for k, v in r.json().items() if k != "instance"}  # `instance` echoes our own path
            assert marker not in str(answer) and ids["interaction_id"] not in str(answer), (who, method, template)
            checked += 1
    assert checked >= 60, checked
    # Lists under A's own path never show B's rows either.
    for method, template in _routes():
        if method == "GET" and re.findall(r"{(\w+)(?::\w+)?}", template) == ["project_id"]:
            r = router.get(template.replace("{project_id:uuid}", a["id"]), headers=admin.h)
            assert r.status_code == 200, (template, r.text[:200])
            assert marker not in r.text and ids["interaction_id"] not in r.text, template
    # And B is untouched: its interaction still reads back.
    assert router.get(f"/v1/projects/{b['id']}/interactions/{ids['interaction_id']}", headers=admin.h
                      ).json()["content"]["text"] == f"B secret {marker}"
