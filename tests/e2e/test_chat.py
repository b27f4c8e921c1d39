"""Chat end to end through the router: conversation tokens, messages and counters, agent replies,
read receipts, tenancy and roles."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import json
import re
import uuid
from datetime import datetime
from typing import Any

import httpx

from common.ids import uuid7
from tests.conftest import Admin, problem, project_secret, sql

TOKEN = "X-Relay-Conversation-Token"


def _start(router: httpx.Client, key: dict[str, Any], body: str = "Hello, the export button does nothing",
           **extra: Any) -> dict[str, Any]:
    extra.setdefault("session_id", str(uuid7()))
    r = router.post("/v1/ingest/conversations", headers=key["h"], json={"body": body, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _as_user(conversation: dict[str, Any], key: dict[str, Any]) -> dict[str, str]:
    return {**key["h"], TOKEN: conversation["token"]}


def _messages(router: httpx.Client, key: dict[str, Any], conversation: dict[str, Any]) -> list[dict[str, Any]]:
    r = router.get(f"/v1/ingest/conversations/{conversation['id']}/messages", headers=_as_user(conversation, key))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_conversation_with_agent_replies_and_read_receipts(router: httpx.Client, admin: Admin,
                                                           topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    dsn = topo["cells"]["us-west"]["database_url"]
    key = admin.key(p, ["ingest"])
    base = f"/v1/projects/{p['id']}/conversations"
    session = str(uuid7())
    c = _start(router, key, session_id=session, subject="Export", user={"external_id": "grace", "name": "Grace"})
    assert uuid.UUID(c["id"]).version == 7
    assert (c["status"], c["subject"], c["message_count"]) == ("open", "Export", 1)
    assert c["last_message_at"] is not None
    # The token is HMAC-SHA256 of the id under the project's secret, url-safe base64.
    secret = project_secret(topo, "us-west", p["id"])
    mac = hmac.new(secret, f"conversation:{c['id']}".encode(), hashlib.sha256).digest()
    assert c["token"] == base64.urlsafe_b64encode(mac).decode()

    # The first message is also a `chat` interaction of the session's person.
    chats = router.get(f"/v1/projects/{p['id']}/interactions", headers=admin.h, params={"type": "chat"}).json()
    [interaction] = chats["data"]
    assert interaction["content"]["text"] == "Hello, the export button does nothing"
    assert interaction["content"]["conversation_id"] == c["id"] and interaction["session_id"] == session
    got = router.get(f"{base}/{c['id']}", headers=admin.h).json()
    assert got["user_id"] == interaction["user_id"] is not None and got["session_id"] == session
    assert (got["status"], got["message_count"], got["assignee_id"]) == ("open", 1, None)

    # The end user writes; the agent answers; each sees the other's words.
    r = router.post(f"/v1/ingest/conversations/{c['id']}/messages", headers=_as_user(c, key),
                    json={"body": "Chrome 131, macOS"})
    assert r.status_code == 201, r.text
    assert r.json()["direction"] == "inbound" and r.json()["read_at"] is None and "author_id" not in r.json()
    r = router.post(f"{base}/{c['id']}/messages", headers=admin.h, json={"body": "Thanks, looking into it"})
    assert r.status_code == 201, r.text
    reply = r.json()
    assert (reply["direction"], reply["author_id"], reply["read_at"]) == ("outbound", admin.user["id"], None)
    agent_view = router.get(f"{base}/{c['id']}/messages", headers=admin.h).json()["data"]
    assert [(m["direction"], m["body"]) for m in agent_view] == [
        ("inbound", "Hello, the export button does nothing"), ("inbound", "Chrome 131, macOS"),
        ("outbound", "Thanks, looking into it")]
    assert all(m["read_at"] is None for m in agent_view)  # listing is not reading

    # The end user reads: the reply is marked read, and the agent sees the receipt.
    seen = _messages(router, key, c)
    assert [m["body"] for m in seen] == [m["body"] for m in agent_view]
    assert seen[2]["read_at"] is not None and seen[0]["read_at"] is None
    assert "author_id" not in seen[2]
    agent_view = router.get(f"{base}/{c['id']}/messages", headers=admin.h).json()["data"]
    assert agent_view[2]["read_at"] == seen[2]["read_at"]
    assert _messages(router, key, c)[2]["read_at"] == seen[2]["read_at"]  # read once, stamp kept

    # The agent marks the end user's messages read; the end user sees it.
    r = router.post(f"{base}/{c['id']}/read", headers=admin.h)
    assert r.status_code == 200, r.text
    assert r.json()["marked"] == 2 and r.json()["conversation_id"] == c["id"]
    assert all(m["read_at"] is not None for m in _messages(router, key, c))
    assert router.post(f"{base}/{c['id']}/read", headers=admin.h).json()["marked"] == 0

    # Triage: assign and close; a new message from the end user reopens it.
    r = router.patch(f"{base}/{c['id']}", headers=admin.h, json={"status": "closed", "assignee_id": admin.user["id"]})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["assignee_id"]) == ("closed", admin.user["id"])
    closed = router.get(base, headers=admin.h, params={"status": "closed", "assignee_id": admin.user["id"]}).json()
    assert [x["id"] for x in closed["data"]] == [c["id"]]
    assert router.get(base, headers=admin.h, params={"status": "open"}).json()["data"] == []
    write_key = admin.key(p, ["write"])
    r = router.post(f"{base}/{c['id']}/messages", headers=write_key["h"], json={"body": "Fixed in 2.4.2"})
    assert r.status_code == 201 and r.json()["author_id"] is None  # a key answers anonymously
    assert router.get(f"{base}/{c['id']}", headers=admin.h).json()["status"] == "closed"  # replies don't reopen
    router.post(f"/v1/ingest/conversations/{c['id']}/messages", headers=_as_user(c, key), json={"body": "Works!"})
    final = router.get(f"{base}/{c['id']}", headers=admin.h).json()
    assert (final["status"], final["message_count"]) == ("open", 5)
    last = router.get(f"{base}/{c['id']}/messages", headers=admin.h).json()["data"][-1]
    assert final["last_message_at"] == last["created_at"]
    patched = router.patch(f"{base}/{c['id']}", headers=admin.h, json={"assignee_id": None}).json()
    assert patched["assignee_id"] is None and patched["status"] == "open"

    # Every message is announced to the workers; agents' changes are audited, without message text.
    assert sql(dsn, """SELECT count(*) FROM outbox WHERE kind = 'message.created'
                        AND payload->>'conversation_id' = $1""", c["id"])[0][0] == 5
    audited = sql(dsn, """SELECT action, actor_id, meta::text AS meta FROM audit_logs
                           WHERE project_id = $1 AND target_type IN ('conversation', 'message')
                           ORDER BY created_at""", uuid.UUID(p["id"]))
    actions = [a["action"] for a in audited]
    assert actions == ["message.created", "conversation.read", "conversation.read", "conversation.updated",
                       "message.created", "conversation.updated"], actions
    assert not any("looking into it" in a["meta"] or "Fixed" in a["meta"] for a in audited)


def test_tokens_open_exactly_one_conversation(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    mine, theirs = _start(router, key, "mine"), _start(router, key, "theirs")
    url = f"/v1/ingest/conversations/{mine['id']}/messages"
    refusals = [
        problem(router.get(url, headers=key["h"]), 404),  # no token
        problem(router.get(url, headers={**key["h"], TOKEN: "not-a-token"}), 404),
        problem(router.get(url, headers={**key["h"], TOKEN: theirs["token"]}), 404),  # another conversation's
        problem(router.post(url, headers={**key["h"], TOKEN: theirs["token"]}, json={"body": "let me in"}), 404),
        problem(router.post(url, headers=key["h"], json={"body": "let me in"}), 404),
        problem(router.get(f"/v1/ingest/conversations/{uuid7()}/messages", headers={**key["h"], TOKEN: "x"}), 404),
    ]
    # The same answer whatever was wrong: nothing tells whether the conversation exists.
    assert {r["detail"] for r in refusals} == {"no such conversation"}
    # Another project's token for its own conversation opens nothing here (per-project secrets).
    other = admin.project("eu-west")
    other_key = admin.key(other, ["ingest"])
    foreign = _start(router, other_key, "foreign")
    problem(router.get(f"/v1/ingest/conversations/{foreign['id']}/messages", headers=_as_user(foreign, key)), 404)
    assert [m["body"] for m in _messages(router, key, mine)] == ["mine"]
    assert [m["body"] for m in _messages(router, key, theirs)] == ["theirs"]
    # The token works with or without its base64 padding.
    unpadded = {**key["h"], TOKEN: mine["token"].rstrip("=")}
    assert router.get(url, headers=unpadded).status_code == 200

    # A retry with the same id returns the conversation to the session that opened it, and nobody else.
    cid, session = str(uuid7()), str(uuid7())
    first = router.post("/v1/ingest/conversations", headers=key["h"],
                        json={"id": cid, "session_id": session, "body": "hi"})
    again = router.post("/v1/ingest/conversations", headers=key["h"],
                        json={"id": cid, "session_id": session, "body": "hi"})
    assert (first.status_code, again.status_code) == (201, 200) and again.json() == first.json()
    problem(router.post("/v1/ingest/conversations", headers=key["h"],
                        json={"id": cid, "session_id": str(uuid7()), "body": "hi"}), 409)

    # Bodies are checked.
    err = problem(router.post("/v1/ingest/conversations", headers=key["h"],
                              json={"session_id": str(uuid7()), "body": "   "}), 422)
    assert err["errors"][0]["pointer"] == "/body"
    err = problem(router.post("/v1/ingest/conversations", headers=key["h"], json={"body": "hi"}), 422)
    assert err["errors"][0]["pointer"] == "/session_id"
    err = problem(router.post(url, headers=_as_user(mine, key), json={"body": "x" * 20_001}), 422)
    assert err["errors"][0]["pointer"] == "/body"


def test_concurrent_messages_are_counted_exactly(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    dsn = topo["cells"]["us-west"]["database_url"]
    key = admin.key(p, ["ingest"])
    c = _start(router, key, "first")
    url = f"/v1/ingest/conversations/{c['id']}/messages"
    agent_url = f"/v1/projects/{p['id']}/conversations/{c['id']}/messages"
    n, replies = 24, 6

    def send(i: int) -> int:
        if i < replies:
            return router.post(agent_url, headers=admin.h, json={"body": f"reply {i}"}).status_code
        return router.post(url, headers=_as_user(c, key), json={"body": f"message {i}"}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        assert list(pool.map(send, range(n + replies))) == [201] * (n + replies)
        # Concurrent retries of one message: stored once, every retry answered with it.
        mid = str(uuid7())
        retries = list(pool.map(lambda _: router.post(url, headers=_as_user(c, key),
                                                      json={"id": mid, "body": "retried"}), range(10)))
    assert sorted(r.status_code for r in retries) == [200] * 9 + [201]
    assert {r.json()["id"] for r in retries} == {mid}
    got = router.get(f"/v1/projects/{p['id']}/conversations/{c['id']}", headers=admin.h).json()
    total = 1 + n + replies + 1
    assert got["message_count"] == total
    rows = sql(dsn, "SELECT count(*), max(created_at) FROM messages WHERE conversation_id = $1", uuid.UUID(c["id"]))
    assert rows[0][0] == total
    assert datetime.fromisoformat(got["last_message_at"]) == rows[0][1]
    # Paging through the transcript, oldest first, returns every message once.
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = router.get(agent_url, headers=admin.h, params=params).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len({m["id"] for m in seen}) == total and seen[0]["body"] == "first"
    stamps = [datetime.fromisoformat(m["created_at"]) for m in seen]
    assert stamps == sorted(stamps)


def test_chat_messages_are_scrubbed(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("eu-west")
    dsn = topo["cells"]["eu-west"]["database_url"]
    sql(dsn, """INSERT INTO privacy_rules (id, project_id, name, rule)
                VALUES ($1, $2, 'cards', '{"type": "pattern", "pattern": "card", "scope": ["messages"]}')""",
        uuid7(), uuid.UUID(p["id"]))
    key = admin.key(p, ["ingest"])
    c = _start(router, key, "my card is 4111 1111 1111 1111, charged twice")
    [message] = _messages(router, key, c)
    # Redacted by a card rule: the project's default one, or this test's if there is no default.
    assert re.fullmatch(r"my card is \[redacted:cards?\], charged twice", message["body"]), message
    stored = sql(dsn, "SELECT body, meta::text FROM messages WHERE conversation_id = $1", uuid.UUID(c["id"]))
    assert "4111" not in stored[0][0] and json.loads(stored[0][1])["total"] == 1
    assert not sql(dsn, "SELECT 1 FROM interactions WHERE project_id = $1 AND content_text LIKE '%4111%'",
                   uuid.UUID(p["id"]))


def test_chat_tenancy_roles_and_scopes(router: httpx.Client, admin: Admin) -> None:
    a = admin.project("us-west")
    other = Admin(router)
    b = other.project("us-west")
    a_ingest, b_ingest = admin.key(a, ["ingest"]), other.key(b, ["ingest"])
    mine, theirs = _start(router, a_ingest, "in a"), _start(router, b_ingest, "in b")
    a_admin_key = admin.key(a, ["admin"])
    endpoints = [
        ("GET", "conversations/{c}", None), ("PATCH", "conversations/{c}", {"status": "closed"}),
        ("GET", "conversations/{c}/messages", None), ("POST", "conversations/{c}/messages", {"body": "hi"}),
        ("POST", "conversations/{c}/read", None),
    ]
    # Project A's credentials never reach project B's conversations: 404, never which.
    for h in (admin.h, a_admin_key["h"]):
        for method, path, body in endpoints:
            for project in (a, b):
                target = f"/v1/projects/{project['id']}/" + path.format(c=theirs["id"])
                problem(router.request(method, target, headers=h, json=body), 404)
        problem(router.get(f"/v1/projects/{b['id']}/conversations", headers=h), 404)
    # The end user of project A cannot use project B's conversation even with its token.
    problem(router.get(f"/v1/ingest/conversations/{theirs['id']}/messages", headers=_as_user(theirs, a_ingest)), 404)
    assert [x["id"] for x in router.get(f"/v1/projects/{a['id']}/conversations", headers=admin.h).json()["data"]] \
        == [mine["id"]]
    untouched = router.get(f"/v1/projects/{b['id']}/conversations/{theirs['id']}", headers=other.h).json()
    assert (untouched["status"], untouched["message_count"]) == ("open", 1)

    # Viewers and read keys read but do not write; ingest keys cannot manage at all.
    viewer = admin.member(a, "viewer")
    read_key = admin.key(a, ["read"])
    for h in (viewer.h, read_key["h"]):
        assert router.get(f"/v1/projects/{a['id']}/conversations", headers=h).status_code == 200
        assert router.get(f"/v1/projects/{a['id']}/conversations/{mine['id']}/messages", headers=h).status_code == 200
        for method, path, body in endpoints[1:]:
            if method != "GET":
                problem(router.request(method, f"/v1/projects/{a['id']}/" + path.format(c=mine["id"]),
                                       headers=h, json=body), 403)
    for method, path, body in [("GET", "conversations", None), *endpoints]:
        problem(router.request(method, f"/v1/projects/{a['id']}/" + path.format(c=mine["id"]),
                               headers=a_ingest["h"], json=body), 403)
    # ... and management credentials cannot act as the end user.
    problem(router.get(f"/v1/ingest/conversations/{mine['id']}/messages", headers={**read_key["h"],
                                                                                   TOKEN: mine["token"]}), 403)
    problem(router.post("/v1/ingest/conversations", headers=a_admin_key["h"],
                        json={"session_id": str(uuid7()), "body": "x"}), 403)
    after = router.get(f"/v1/projects/{a['id']}/conversations/{mine['id']}", headers=admin.h).json()
    assert (after["status"], after["message_count"]) == ("open", 1)
    problem(router.patch(f"/v1/projects/{a['id']}/conversations/{mine['id']}", headers=admin.h,
                         json={"status": "archived"}), 422)
    problem(router.patch(f"/v1/projects/{a['id']}/conversations/{mine['id']}", headers=admin.h, json={}), 422)
    problem(router.get(f"/v1/projects/{a['id']}/conversations", headers=admin.h, params={"sort": "title"}), 422)
