"""Tenancy, route by route: nobody reaches a project's data but its own people and keys.

1. Every cell endpoint, called with project A's credentials against project B's ids, answers 404, never data.
   A and B live in the same cell, so only the cell's own `project_id` scoping keeps them apart.
2. Every route of the router and the cells, called by every kind of caller (nobody, a made-up secret on a real
   prefix, a key of each scope, another project's key, a signed-in stranger, a member of each role): only what
   RULES allows gets past the access checks, everything else is 401/403/404 and changes nothing.

The routes come from the applications themselves, so an endpoint added later is covered automatically: a
route with no rule in RULES fails `test_every_route_has_a_rule` with its name, and an id parameter this test
cannot fill fails until the new resource is added to `build_b` below.
"""

from __future__ import annotations

import re
import secrets
import uuid
import warnings
from typing import Any

import httpx

from cell.app import AREAS
from common.ids import uuid7
from tests.conftest import Admin, sql

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
    other = _ok(router.post("/v1/ingest/interactions", headers=ingest["h"], json={
        "type": "feedback", "session_id": session_id, "content": {"text": f"B other {marker}"}}))
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
        "conversation_token": conversation["token"], "export_id": export["id"], "other_id": other["id"],
    }


def _routes() -> list[tuple[str, str]]:
    found = []
    for area in AREAS:
        for handler in area.ROUTES:
            if not hasattr(handler, "paths"):  # a Router of HTML pages (cell.dashboard): tests/dashboard checks them
                continue
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
        body: dict[str, Any] = next((v for suffix, v in BODIES.items() if template.endswith(suffix)), {})
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


# -- Every route, every kind of caller ------------------------------------------------------------------------

RULES: dict[tuple[str, str], str] = {
    # Who may call each route of the router and the cells, as the contract says (docs/security.md):
    #   public         anyone, no credentials needed
    #   account        any signed-in dashboard user (a session; keys are refused)
    #   ingest         a key of the project with the ingest scope (and nothing else)
    #   read/write/admin  a key of the project whose scopes reach that level, or a member whose role does
    #                  (viewer = read, agent = write, admin and owner = admin)
    #   member-session any member of the project, signed in (keys are refused)
    #   admin-session  a member with role admin or owner, signed in (keys are refused)
    #   owner-session  the project's owner, signed in
    #   provider       nobody of ours: the cell verifies a provider's own signature
    #   not-here       tested elsewhere (operator endpoints, the OpenAPI pages)
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "not-here",
    ("POST", "/v1/auth/login"): "public",
    ("POST", "/v1/auth/logout"): "account",
    ("GET", "/v1/auth/me"): "account",
    ("POST", "/v1/auth/signup"): "public",
    ("POST", "/v1/hooks/{project_id:uuid}/{provider:str}"): "provider",
    ("GET", "/v1/ingest/config"): "ingest",
    ("POST", "/v1/ingest/conversations"): "ingest",
    ("GET", "/v1/ingest/conversations/{conversation_id:uuid}/messages"): "ingest",
    ("POST", "/v1/ingest/conversations/{conversation_id:uuid}/messages"): "ingest",
    ("GET", "/v1/ingest/feedback-items"): "ingest",
    ("POST", "/v1/ingest/feedback-items"): "ingest",
    ("DELETE", "/v1/ingest/feedback-items/{item_id:uuid}/votes"): "ingest",
    ("POST", "/v1/ingest/feedback-items/{item_id:uuid}/votes"): "ingest",
    ("GET", "/v1/ingest/flags"): "ingest",
    ("POST", "/v1/ingest/interactions"): "ingest",
    ("POST", "/v1/ingest/interactions/{interaction_id:uuid}/media"): "ingest",
    ("POST", "/v1/ingest/replays/{replay_id:uuid}/chunks/{index:int}"): "ingest",
    ("POST", "/v1/ingest/replays/{replay_id:uuid}/finish"): "ingest",
    ("GET", "/v1/ingest/roadmap"): "ingest",
    ("POST", "/v1/ingest/sessions"): "ingest",
    ("GET", "/v1/ingest/surveys"): "ingest",
    ("POST", "/v1/ingest/surveys/{survey_id:uuid}/responses"): "ingest",
    ("GET", "/v1/projects"): "account",
    ("POST", "/v1/projects"): "account",
    ("GET", "/v1/projects/{project_id:uuid}"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/api-keys"): "admin",
    ("POST", "/v1/projects/{project_id:uuid}/api-keys"): "admin",
    ("DELETE", "/v1/projects/{project_id:uuid}/api-keys/{key_id:uuid}"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/audit-logs"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/conversations"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/conversations/{conversation_id:uuid}"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/conversations/{conversation_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/conversations/{conversation_id:uuid}/messages"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/conversations/{conversation_id:uuid}/messages"): "write",
    ("POST", "/v1/projects/{project_id:uuid}/conversations/{conversation_id:uuid}/read"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/end-users"): "read",
    ("DELETE", "/v1/projects/{project_id:uuid}/end-users/{user_id:uuid}"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/end-users/{user_id:uuid}"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/end-users/{user_id:uuid}/export"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/feature-flags"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/feature-flags"): "write",
    ("DELETE", "/v1/projects/{project_id:uuid}/feature-flags/{flag_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/feature-flags/{flag_id:uuid}"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/feature-flags/{flag_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/feedback-items"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/feedback-items"): "write",
    ("DELETE", "/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}/links"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}/links"): "write",
    ("DELETE", "/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}/links/{interaction_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}/votes"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/integrations"): "read",
    ("DELETE", "/v1/projects/{project_id:uuid}/integrations/{provider:str}"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/integrations/{provider:str}"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/integrations/{provider:str}"): "admin",
    ("PUT", "/v1/projects/{project_id:uuid}/integrations/{provider:str}"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/interactions"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/links"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/links"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/media"): "read",
    ("DELETE", "/v1/projects/{project_id:uuid}/media/{media_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/media/{media_id:uuid}"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/media/{media_id:uuid}/content"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/members"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/members"): "admin-session",
    ("DELETE", "/v1/projects/{project_id:uuid}/members/{user_id:uuid}"): "admin-session",
    ("GET", "/v1/projects/{project_id:uuid}/move"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/move"): "owner-session",
    ("GET", "/v1/projects/{project_id:uuid}/privacy-rules"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/privacy-rules"): "admin",
    ("DELETE", "/v1/projects/{project_id:uuid}/privacy-rules/{rule_id:uuid}"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/privacy-rules/{rule_id:uuid}"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/privacy-rules/{rule_id:uuid}"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/replays"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/replays/{replay_id:uuid}"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/replays/{replay_id:uuid}/events"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/residency"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/residency/audits"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/roadmap-items"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/roadmap-items"): "write",
    ("POST", "/v1/projects/{project_id:uuid}/roadmap-items/reorder"): "write",
    ("DELETE", "/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}"): "write",
    ("DELETE", "/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback"): "write",
    ("DELETE", "/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback/{feedback_item_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/sessions"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/sessions/{session_id:uuid}"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/settings"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/settings"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/surveys"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/surveys"): "write",
    ("DELETE", "/v1/projects/{project_id:uuid}/surveys/{survey_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/surveys/{survey_id:uuid}"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/surveys/{survey_id:uuid}"): "write",
    ("GET", "/v1/projects/{project_id:uuid}/surveys/{survey_id:uuid}/responses"): "read",
    ("GET", "/v1/projects/{project_id:uuid}/webhooks"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/webhooks"): "admin",
    ("DELETE", "/v1/projects/{project_id:uuid}/webhooks/{webhook_id:uuid}"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/webhooks/{webhook_id:uuid}"): "read",
    ("PATCH", "/v1/projects/{project_id:uuid}/webhooks/{webhook_id:uuid}"): "admin",
    ("GET", "/v1/projects/{project_id:uuid}/webhooks/{webhook_id:uuid}/deliveries"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/webhooks/{webhook_id:uuid}/rotate-secret"): "admin",
    ("POST", "/v1/projects/{project_id:uuid}/webhooks/{webhook_id:uuid}/test"): "admin",
    ("GET", "/v1/regions"): "public",
    ("GET", "/openapi.json"): "public",
    # duplicates (cell/interactions): suggestions are read, people's decisions are writes
    ("GET", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/similar"): "read",
    ("POST", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/duplicate-of"): "write",
    ("DELETE", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/duplicate-of"): "write",
    ("POST", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/similar/{other_id:uuid}/dismiss"):
        "write",
    # accounts (router/auth/account.py): each acts on the signed-in account only
    ("GET", "/v1/auth/audit-logs"): "account",
    ("GET", "/v1/auth/sessions"): "account",
    ("DELETE", "/v1/auth/sessions/{session_id:uuid}"): "account",
    ("PATCH", "/v1/auth/me"): "account",
    ("DELETE", "/v1/auth/me"): "account",
    ("POST", "/v1/auth/password"): "account",
    ("POST", "/v1/auth/password-reset"): "public",
    ("POST", "/v1/auth/password-reset/complete"): "public",
    ("POST", "/v1/invitations/{token:str}/accept"): "account",
    # project lifecycle (router/projects/lifecycle.py) and members (router/members/)
    ("PATCH", "/v1/projects/{project_id:uuid}"): "admin-session",
    ("DELETE", "/v1/projects/{project_id:uuid}"): "owner-session",
    ("GET", "/v1/projects/{project_id:uuid}/deletion"): "member-session",
    ("PATCH", "/v1/projects/{project_id:uuid}/members/{user_id:uuid}"): "admin-session",
    ("GET", "/v1/projects/{project_id:uuid}/invitations"): "admin-session",
    ("DELETE", "/v1/projects/{project_id:uuid}/invitations/{invitation_id:uuid}"): "admin-session",
    ("POST", "/v1/projects/{project_id:uuid}/identity-secret"): "admin",
    # project exports (cell/exports/): the owner only
    ("POST", "/v1/projects/{project_id:uuid}/export"): "owner-session",
    ("POST", "/v1/projects/{project_id:uuid}/exports"): "owner-session",
    ("GET", "/v1/projects/{project_id:uuid}/exports"): "owner-session",
    ("GET", "/v1/projects/{project_id:uuid}/exports/{export_id:uuid}"): "owner-session",
    ("GET", "/v1/projects/{project_id:uuid}/exports/{export_id:uuid}/content"): "owner-session",
    ("GET", "/v1/projects/{project_id:uuid}/exports/{export_id:uuid}/manifest"): "owner-session",
}
LEVELS = {"read": 1, "write": 2, "admin": 3}
ROLE_LEVELS = {"viewer": 1, "agent": 2, "admin": 3, "owner": 4}
# Valid bodies for write routes: with them, a caller refused for their role or scope is refused by the
# access check itself, not by body validation (which runs first). Routes that must not run for real even
# when allowed (a move, a logout) have none.
EXAMPLES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/projects"): {"name": "matrix", "region": "us-west"},
    ("POST", "/v1/auth/signup"): {"email": "matrix@example.com", "password": "short"},
    ("POST", "/v1/projects/{project_id:uuid}/api-keys"): {"name": "matrix", "scopes": ["read"]},
    ("POST", "/v1/projects/{project_id:uuid}/members"): {"email": "nobody-at-all@example.com", "role": "viewer"},
    ("POST", "/v1/projects/{project_id:uuid}/feedback-items"): {"title": "matrix"},
    ("POST", "/v1/projects/{project_id:uuid}/roadmap-items"): {"title": "matrix"},
    ("POST", "/v1/projects/{project_id:uuid}/feature-flags"): {"flag": "matrix_flag", "enabled": False},
    ("POST", "/v1/projects/{project_id:uuid}/privacy-rules"): {"name": "m", "rule": {"type": "selector",
                                                                                      "selector": ".m"}},
    ("POST", "/v1/projects/{project_id:uuid}/webhooks"): {"url": "http://127.0.0.1:9/hook", "events": ["vote.created"]},
    ("PUT", "/v1/projects/{project_id:uuid}/integrations/{provider:str}"): {
        "config": {"webhook_url": "http://127.0.0.1:9/s"}},
    ("PATCH", "/v1/projects/{project_id:uuid}/integrations/{provider:str}"): {"enabled": False},
    ("PATCH", "/v1/projects/{project_id:uuid}/settings"): {},
    ("PATCH", "/v1/projects/{project_id:uuid}"): {"name": "matrix renamed"},
    ("DELETE", "/v1/auth/me"): {"password": "not the password"},
    ("PATCH", "/v1/projects/{project_id:uuid}/members/{user_id:uuid}"): {"role": "viewer"},
    ("PATCH", "/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}"): {},
    ("POST", "/v1/projects/{project_id:uuid}/conversations/{conversation_id:uuid}/messages"): {"body": "matrix"},
    ("POST", "/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}/links"): {"interaction_id": str(uuid7())},
    ("POST", "/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback"): {
        "feedback_item_id": str(uuid7())},
    ("DELETE", "/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback"): {
        "feedback_item_id": str(uuid7())},
    ("POST", "/v1/ingest/interactions"): {"type": "bug", "content": {"text": "matrix"}},
    ("POST", "/v1/ingest/sessions"): {},
    ("POST", "/v1/ingest/feedback-items"): {"title": "matrix"},
}
# Allowed, but not run: each would end, change or delete what the matrix acts with (a session, the account,
# the project).
NOT_RUN_WHEN_ALLOWED = {("POST", "/v1/auth/logout"), ("DELETE", "/v1/auth/me"), ("POST", "/v1/auth/password"),
                        ("PATCH", "/v1/auth/me"), ("DELETE", "/v1/projects/{project_id:uuid}")}
BODY_METHODS = ("POST", "PUT", "PATCH")


def route_table() -> set[tuple[str, str]]:
    """Every (method, path template) the router and a cell serve, read from their applications, plus the
    prefixes the router forwards (which are the cell's routes). OPTIONS (CORS preflights) and the cells'
    internal hop-only endpoints are left out."""
    from cell.app import create_app as cell_app
    from cell.settings import CellSettings
    from common.settings import CellEndpoint
    from router.app import create_app as router_app
    from router.settings import RouterSettings

    secret = "s" * 32
    with warnings.catch_warnings():  # the apps' own deprecation notes; their processes show them where they run
        warnings.simplefilter("ignore")
        return _routes_of(cell_app(CellSettings(region="us-west", database_url="postgresql://x/y",
                                                redis_url="redis://x", object_store="memory://x", hop_secret=secret,
                                                secret_key=secret, key_pepper=secret)),
                          router_app(RouterSettings(database_url="postgresql://x/y", redis_url="redis://x",
                                                    key_pepper=secret,
                                                    cells={"us-west": CellEndpoint("http://x", "us", secret)})))


def _routes_of(cell: Any, router: Any) -> set[tuple[str, str]]:
    from litestar import Litestar

    while not isinstance(cell, Litestar):  # the hop middleware and telemetry wrap the application
        cell = getattr(cell, "inner", None) or cell.app
    found = set()
    for app in (cell, router.control):
        for route in app.routes:
            if route.path.startswith(("/internal/", "/schema")):
                continue
            for handler in getattr(route, "route_handlers", []):
                found |= {(m, route.path) for m in handler.http_methods if m != "OPTIONS"}
    return found


PAGES = "/app"
"""The dashboard's HTML pages: a cookie session with CSRF, redirects to sign in; their own tests
(tests/dashboard) hold them to the same roles (a viewer sees no edit control, a forged POST is 403, another
project's page is 404), so they take the rule `not-here` here."""


def test_every_route_has_a_rule() -> None:
    routes = route_table()
    missing = sorted(r for r in routes - RULES.keys() if not r[1].startswith(PAGES))
    assert not missing, ("routes with no rule in tests/e2e/test_tenancy_matrix.py RULES (say who may call them):\n"
                         + "\n".join(f"    {m} {p}" for m, p in missing))
    assert len(routes) >= 100, len(routes)


def _project_state(topo: dict[str, Any], project_id: str) -> dict[str, str]:
    """A digest of everything stored for a project, in the control DB and in its cell (minus use times)."""
    control, cell = topo["router"]["database_url"], topo["cells"]["us-west"]["database_url"]
    out: dict[str, str] = {}
    for name, query in (
            ("memberships", "SELECT user_id::text || role::text FROM project_memberships WHERE project_id = $1"),
            ("keys", "SELECT key_prefix || revoked::text FROM key_directory WHERE project_id = $1"),
            ("project", "SELECT name || state::text || region FROM project_directory WHERE id = $1"),
            ("moves", "SELECT id::text FROM moves WHERE project_id = $1")):
        out[name] = ",".join(sorted(r[0] for r in sql(control, query, uuid.UUID(project_id))))
    tables = [r[0] for r in sql(cell, """SELECT table_name FROM information_schema.columns
                                          WHERE column_name = 'project_id' AND table_schema = 'public'""")]
    for table in tables:
        rows = sql(cell, f"""SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM (
                               SELECT (to_jsonb(t) - 'last_used_at' - 'last_seen_at')::text AS x
                                 FROM "{table}" t WHERE project_id = $1) s""", uuid.UUID(project_id))
        out[table] = rows[0][0]
    return out


def _expected(rule: str, caller: str) -> bool:
    """Whether `caller` may use a route with `rule` (see RULES)."""
    kind, _, level = caller.partition(":")
    if rule == "public":  # but a key presented is verified first anywhere: a made-up secret is 401 even here
        return caller != "forged"
    if rule in ("provider", "not-here"):
        return False
    if rule == "account":
        return kind in ("role", "stranger")
    if rule == "ingest":
        return caller == "key:ingest"
    if rule == "member-session":
        return kind == "role"
    if rule == "admin-session":
        return kind == "role" and ROLE_LEVELS[level] >= 3
    if rule == "owner-session":
        return caller == "role:owner"
    need = LEVELS[rule]
    if kind == "key":
        return LEVELS.get(level, 0) >= need
    return kind == "role" and ROLE_LEVELS[level] >= need


def _refusals(rule: str, caller: str, method: str, template: str) -> set[int]:
    """The statuses that refuse `caller` correctly: 401 with no or bad credentials (a made-up secret always, before
    its body is looked at), 404 for strangers to the project, 403 (or, before the access check, body validation)
    for members and keys that fall short."""
    kind = caller.partition(":")[0]
    if rule == "provider":
        ok = {400, 401, 403, 404}
    elif caller == "forged":
        return {401}  # the key is verified before the body is read: never a 400/422 about the body
    elif caller == "none":
        ok = {401}
    elif kind in ("stranger", "other-key") and rule not in ("account", "ingest"):
        ok = {404}
    else:
        ok = {401, 403, 404}
    if (method, template) not in EXAMPLES and method in BODY_METHODS:
        ok |= {400, 422}  # validated before any access check: nothing to say about whom it was meant for
    return ok


def test_every_route_admits_only_whom_it_should(router: httpx.Client, topo: dict[str, Any]) -> None:
    """For each route of the router and the cells and each kind of caller — nobody, a made-up secret on a real
    prefix, a key of each scope, a key of another project, a signed-in stranger, a member of each role — only
    the combinations RULES allows get past the access checks; every other one is refused 401/403/404 and
    changes nothing stored for the project."""
    owner = Admin(router)
    project, other = owner.project("us-west"), owner.project("us-west")
    callers: dict[str, dict[str, str]] = {"none": {}}
    for scope in ("ingest", "read", "write", "admin"):
        callers[f"key:{scope}"] = owner.key(project, [scope])["h"]
    admin_key = callers["key:admin"]["Authorization"]
    callers["forged"] = {"Authorization": admin_key[:20] + ("A" if admin_key[20] != "A" else "B") + admin_key[21:]}
    callers["other-key"] = owner.key(other, ["read", "write", "admin"])["h"]  # ingest into Q is Q's own business
    callers["stranger"] = Admin(router).h
    callers["role:owner"] = owner.h
    for role in ("viewer", "agent", "admin"):
        callers[f"role:{role}"] = owner.member(project, role).h
    routes = sorted(route_table() & RULES.keys())
    addresses = iter(range(1, 1 << 16))

    def call(caller: str, method: str, template: str) -> httpx.Response:
        path = template
        for name in re.findall(r"{(\w+)(?::\w+)?}", template):
            value = {"project_id": project["id"], "provider": "slack", "index": "0"}.get(name, str(uuid7()))
            path = re.sub(r"{" + name + r"(?::\w+)?}", value, path)
        n = next(addresses)  # a client address of its own: no caller's refusals spend another's budget
        headers = {**callers[caller], "X-Forwarded-For": f"198.19.{n // 250}.{n % 250 + 1}"}
        body = EXAMPLES.get((method, template), {} if method in BODY_METHODS else None)
        if (method, template) == ("POST", "/v1/auth/login"):  # public, and the password decides
            body = {"email": owner.email, "password": owner.password}
        return router.request(method, path, headers=headers, json=body)

    before = _project_state(topo, project["id"])
    wrong: list[str] = []
    allowed: list[tuple[str, str, str]] = []
    for method, template in routes:
        rule = RULES[(method, template)]
        if rule == "not-here":
            continue
        for caller in callers:
            if _expected(rule, caller):
                allowed.append((caller, method, template))
                continue
            r = call(caller, method, template)
            if r.status_code not in _refusals(rule, caller, method, template):
                wrong.append(f"{caller} {method} {template} ({rule}): {r.status_code} {r.text[:120]}")
            elif owner.email in r.text or project["name"] in r.text:
                wrong.append(f"{caller} {method} {template}: refused, but the answer names the project's data")
    assert not wrong, "refused callers got through or were refused wrongly:\n" + "\n".join(wrong)
    assert _project_state(topo, project["id"]) == before, "a refused call changed the project"
    for caller, method, template in allowed:
        if (method, template) in NOT_RUN_WHEN_ALLOWED:
            continue
        r = call(caller, method, template)
        if r.status_code in (401, 403) or r.status_code >= 500:
            wrong.append(f"{caller} {method} {template} ({RULES[(method, template)]}): {r.status_code} "
                         f"{r.text[:120]}")
    assert not wrong, "callers the contract allows were refused:\n" + "\n".join(wrong)
    assert len(allowed) > 300, len(allowed)
