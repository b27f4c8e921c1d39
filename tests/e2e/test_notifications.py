"""Notifications by the cell's workers: email over a real local SMTP server (aiosmtpd), Slack to a local hook.

`notify.issue_closed` is written straight into the outbox here, as the
integrations worker does when a provider says a linked issue closed.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import json
import secrets
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from aiosmtpd.controller import Controller

from cell import netguard
from cell.notifications.jobs import NotSent, issue_closed, new_bug
from common import mail
from common.ids import uuid7
from common.pg import create_pool
from relay.devstack import DevStack
from relay.embedded import free_port
from tests.conftest import Admin, sql
from tests.e2e.test_integrations import cell_settings, file_hits
from tests.e2e.test_webhook_delivery import Receiver, _certificate, outbox_id, wait_for, wait_jobs

ISSUE_URL = "https://github.com/acme/app/issues/"


class Inbox:
    """An SMTP server's mailbox: every message it accepted, with its envelope."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "message": parsed,
                                  "tls": session.ssl is not None})
        return "250 Message accepted for delivery"

    def to(self, *addresses: str) -> list[dict[str, Any]]:
        """Messages whose envelope names any of these addresses."""
        wanted = {a.lower() for a in addresses}
        with self._lock:
            return [m for m in self.messages if wanted & {t.lower() for t in m["to"]}]


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def _integrate(router: httpx.Client, admin: Admin, project: dict[str, Any], provider: str,
               config: dict[str, Any]) -> None:
    r = router.put(f"/v1/projects/{project['id']}/integrations/{provider}", headers=admin.h, json={"config": config})
    assert r.status_code == 201, r.text


def _email_config(port: int, security: str = "none") -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "from": "notify@acme.example", "to": ["team@acme.example"],
            "security": security}


def _ingest(router: httpx.Client, key: dict[str, Any], **body: Any) -> str:
    r = router.post("/v1/ingest/interactions", headers=key["h"], json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _settled(topo: dict[str, Any], region: str, interactions: list[str]) -> None:
    """Every consumer of these interactions' `interaction.created` has run (enrichment may set their group)."""
    for interaction_id in interactions:
        wait_jobs(topo, region, outbox_id(topo, region, "interaction.created", "interaction_id", interaction_id))


def _notify(topo: dict[str, Any], region: str, project: dict[str, Any], **payload: Any) -> int:
    rows = sql(topo["cells"][region]["database_url"],
               "INSERT INTO outbox (project_id, kind, payload) VALUES ($1, 'notify.issue_closed', $2::jsonb) "
               "RETURNING id", uuid.UUID(project["id"]), json.dumps(payload))
    return int(rows[0]["id"])


def test_issue_closed_tells_each_person_once(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                             stack: DevStack, inbox: tuple[Inbox, int], receiver: Receiver) -> None:
    box, port = inbox
    region, tag = "us-west", secrets.token_hex(4)
    db = topo["cells"][region]["database_url"]
    p = admin.project(region)
    key = admin.key(p, ["ingest"])
    hook_path = f"/services/T0/B0/{tag}"
    _integrate(router, admin, p, "email", _email_config(port))
    _integrate(router, admin, p, "slack", {"webhook_url": receiver.url(hook_path), "channel": "#support"})

    reporter = f"Reporter.{tag}@Example.com"
    duplicate_reporter, voter, chatter = (f"{who}.{tag}@example.com" for who in ("dup", "voter", "chat"))
    outsider = f"outsider.{tag}@example.com"
    everyone = [reporter, duplicate_reporter, voter, chatter]
    # The interaction whose issue closes, a duplicate of it linked to a feedback item, a chat about it.
    a = _ingest(router, key, type="bug", severity="low", content={"title": "Export fails"},
                user={"external_id": "rep", "email": reporter})
    b = _ingest(router, key, type="bug", content={"text": "CSV export never finishes"},
                user={"external_id": "dup", "email": duplicate_reporter})
    item = router.post(f"/v1/projects/{p['id']}/feedback-items", headers=admin.h, json={"title": "Faster exports"})
    assert item.status_code == 201, item.text
    item_id = item.json()["id"]
    r = router.post(f"/v1/projects/{p['id']}/feedback-items/{item_id}/links", headers=admin.h,
                    json={"interaction_id": b})
    assert r.status_code == 201, r.text
    for user in ({"external_id": "voter", "email": voter}, {"external_id": "anon"},  # no email: nobody to tell
                 {"external_id": "rep-too", "email": reporter.upper()}):  # the reporter again, by another account
        r = router.post(f"/v1/ingest/feedback-items/{item_id}/votes", headers=key["h"],
                        json={"session_id": str(uuid7()), "user": user})
        assert r.status_code == 201, r.text
    r = router.post("/v1/ingest/conversations", headers=key["h"],
                    json={"session_id": str(uuid7()), "body": "Export is stuck",
                          "user": {"external_id": "chat", "email": chatter}})
    assert r.status_code == 201, r.text
    c = str(sql(db, "SELECT id FROM interactions WHERE content_json->>'conversation_id' = $1",
                r.json()["id"])[0]["id"])
    d = _ingest(router, key, type="bug", content={"text": "Unrelated"}, user={"external_id": "o", "email": outsider})
    _settled(topo, region, [a, b, c, d])
    group = f"grp-{tag}"
    sql(db, "UPDATE interactions SET ai_duplicate_group_id = $1, duplicate_confirmed = true "
            "WHERE id = ANY($2::uuid[])", group,
        [uuid.UUID(x) for x in (a, b, c)])
    sql(db, "UPDATE interactions SET ai_duplicate_group_id = NULL WHERE id = $1", uuid.UUID(d))

    url = f"{ISSUE_URL}{tag}"
    _notify(topo, region, p, interaction_id=a, provider="github", external_url=url)
    wait_for(lambda: len(box.to(*everyone)) >= 4, 30, "four emails")
    (slack_request,) = receiver.wait(hook_path, 1)
    # One email per person (the reporter's two accounts share an address), each to them alone.
    messages = box.to(*everyone)
    assert sorted(m["to"][0] for m in messages) == sorted([reporter, duplicate_reporter, voter, chatter])
    assert all(len(m["to"]) == 1 and m["from"] == "notify@acme.example" for m in messages)
    subjects = {m["to"][0]: str(m["message"]["Subject"]) for m in messages}
    assert subjects == {reporter: f"{p['name']}: The problem you reported has been fixed",
                        duplicate_reporter: f"{p['name']}: The problem you reported has been fixed",
                        voter: f"{p['name']}: A request you voted for has been resolved",
                        chatter: f"{p['name']}: The problem you told us about has been fixed"}
    for m in messages:
        message = m["message"]
        assert message["To"] == m["to"][0] and message["From"] == "notify@acme.example"
        assert message["Cc"] is None and message["Auto-Submitted"] == "auto-generated"
        body = message.get_content()
        assert url in body and "Export fails" not in body and "CSV export" not in body  # nobody else's words
    assert box.to(outsider) == []

    slack = json.loads(slack_request["body"])
    assert slack["channel"] == "#support" and url in slack["text"] and "4 of 4 people" in slack["text"]
    assert f"<{url}|{url}>" in slack["blocks"][0]["text"]["text"] and a in slack["blocks"][1]["elements"][0]["text"]

    # The ledger names nobody: a keyed hash per address, and the Slack post.
    ledger = sql(db, "SELECT channel, recipient, user_id FROM notifications_sent WHERE project_id = $1",
                 uuid.UUID(p["id"]))
    assert sorted(r["channel"] for r in ledger) == ["email"] * 4 + ["slack"]
    assert all(len(r["recipient"]) == 64 and "@" not in r["recipient"] for r in ledger if r["channel"] == "email")
    assert [r["recipient"] for r in ledger if r["channel"] == "slack"] == ["slack"]
    synced = router.get(f"/v1/projects/{p['id']}/integrations", headers=admin.h).json()["data"]
    assert all(i["last_sync_at"] for i in synced)

    # The same event again, and the same issue closing for a duplicate linked to it: nobody hears twice.
    again = _notify(topo, region, p, interaction_id=a, provider="github", external_url=url)
    other = _notify(topo, region, p, interaction_id=b, provider="github", external_url=url)
    assert wait_jobs(topo, region, again, ["notifications.issue_closed"]) == {"notifications.issue_closed":
                                                                              "complete"}
    assert wait_jobs(topo, region, other, ["notifications.issue_closed"]) == {"notifications.issue_closed":
                                                                              "complete"}
    assert len(box.to(*everyone)) == 4 and len(receiver.at(hook_path)) == 1
    # Another issue is another event: the outsider's, told to them alone.
    _notify(topo, region, p, interaction_id=d, provider="github", external_url=f"{url}-2")
    (told,) = wait_for(lambda: box.to(outsider), 30, "outsider's email")
    assert f"{url}-2" in told["message"].get_content()
    receiver.wait(hook_path, 2)
    assert len(box.to(*everyone)) == 4

    # No log or trace names a recipient.
    for address in [*everyone, outsider]:
        assert file_hits(stack, address) == [] and file_hits(stack, address.lower()) == []


def test_starttls_required_is_never_skipped(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                           inbox: tuple[Inbox, int], receiver: Receiver) -> None:
    """A server without STARTTLS gets nothing when STARTTLS is configured; the retries that follow post to
    Slack once."""
    box, port = inbox
    region, tag = "eu-west", secrets.token_hex(4)
    p = admin.project(region)
    key = admin.key(p, ["ingest"])
    hook_path = f"/services/T1/B1/{tag}"
    _integrate(router, admin, p, "email", _email_config(port, "starttls"))
    _integrate(router, admin, p, "slack", {"webhook_url": receiver.url(hook_path)})
    person = f"tls.{tag}@example.com"
    a = _ingest(router, key, type="bug", content={"text": "x"}, user={"external_id": "t", "email": person})
    job = _notify(topo, region, p, interaction_id=a, provider="linear", external_url=f"https://linear.app/a/{tag}")
    assert wait_jobs(topo, region, job, ["notifications.issue_closed"], timeout=60) == {
        "notifications.issue_closed": "failed"}
    assert box.to(person) == []
    assert len(receiver.at(hook_path)) == 1
    ledger = sql(topo["cells"][region]["database_url"],
                 "SELECT channel FROM notifications_sent WHERE project_id = $1", uuid.UUID(p["id"]))
    assert [r["channel"] for r in ledger] == ["slack"]


def test_smtp_host_is_checked_when_sending(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                           inbox: tuple[Inbox, int], receiver: Receiver) -> None:
    box, port = inbox
    region, tag = "us-west", secrets.token_hex(4)
    db = topo["cells"][region]["database_url"]
    p = admin.project(region)
    key = admin.key(p, ["ingest"])
    _integrate(router, admin, p, "email", _email_config(port))
    # Passed the guard when configured; now it names a private address.
    sql(db, """UPDATE integrations SET config = jsonb_set(config, '{host}', '"10.0.0.1"')
                WHERE project_id = $1 AND provider = 'email'""", uuid.UUID(p["id"]))
    person = f"guarded.{tag}@example.com"
    a = _ingest(router, key, type="bug", content={"text": "x"}, user={"external_id": "g", "email": person})
    job = _notify(topo, region, p, interaction_id=a, provider="jira", external_url=f"https://acme.atlassian.net/{tag}")
    # Refused for good: the job ends without retrying, nothing sent or recorded.
    assert wait_jobs(topo, region, job, ["notifications.issue_closed"]) == {"notifications.issue_closed": "complete"}
    assert box.to(person) == []
    assert sql(db, "SELECT 1 FROM notifications_sent WHERE project_id = $1", uuid.UUID(p["id"])) == []


def test_new_severe_bug_is_posted_to_slack_once(router: httpx.Client, admin: Admin, stack: DevStack,
                                                topo: dict[str, Any], receiver: Receiver) -> None:
    region, tag = "eu-west", secrets.token_hex(4)
    p = admin.project(region)
    key = admin.key(p, ["ingest"])
    hook_path = f"/services/T2/B2/{tag}"
    _integrate(router, admin, p, "slack", {"webhook_url": receiver.url(hook_path)})
    critical = _ingest(router, key, type="bug", severity="critical",
                       content={"title": "Checkout <!channel> & <http://x.example|crashes>", "description": "500"})
    (request,) = receiver.wait(hook_path, 1)
    posted = json.loads(request["body"])
    assert posted["text"].startswith(f"New critical bug in {p['name']}: Checkout")
    section = posted["blocks"][0]["text"]["text"]
    assert "*New critical bug*" in section
    assert "&lt;!channel&gt; &amp; &lt;http://x.example|crashes&gt;" in section and "<!channel>" not in section
    assert critical in posted["blocks"][1]["elements"][0]["text"]

    # Not severe, or not a bug: nothing.
    quiet = [_ingest(router, key, type="bug", severity="low", content={"text": "typo"}),
             _ingest(router, key, type="feedback", severity="high", content={"text": "idea"}),
             _ingest(router, key, type="bug", content={"text": "no severity"})]
    for interaction_id in quiet:
        job = outbox_id(topo, region, "interaction.created", "interaction_id", interaction_id)
        assert wait_jobs(topo, region, job, ["notifications.new_bug"]) == {"notifications.new_bug": "complete"}
    # The same event run again (a redelivered job) posts nothing more.
    settings = cell_settings(stack, topo, region)
    settings = msgspec.structs.replace(settings, webhooks_allow_loopback=True)

    async def rerun() -> None:
        pool = await create_pool(settings.database_url, 2)
        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                await new_bug({"pool": pool, "settings": settings, "http": http}, {"interaction_id": critical})
        finally:
            await pool.close()

    asyncio.run(rerun())
    assert len(receiver.at(hook_path)) == 1


def test_starttls_checks_the_certificate_against_the_host(router: httpx.Client, admin: Admin, stack: DevStack,
                                                          topo: dict[str, Any], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """STARTTLS to the vetted address, the certificate checked against the configured host name."""
    cert, key_file = _certificate(tmp_path, "smtp.tls.test")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key_file)
    monkeypatch.setattr(mail, "tls_context", lambda: ssl.create_default_context(cafile=str(cert)))

    async def resolver(host: str, port: int) -> list[netguard.IPAddress]:
        assert host.endswith(".tls.test")
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(netguard, "resolve", resolver)
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=server_tls, require_starttls=True)
    controller.start()
    try:
        region, tag = "eu-west", secrets.token_hex(4)
        db = topo["cells"][region]["database_url"]
        p = admin.project(region)
        key = admin.key(p, ["ingest"])
        _integrate(router, admin, p, "email", _email_config(port, "starttls"))
        person = f"tls.{tag}@example.com"
        a = _ingest(router, key, type="bug", content={"text": "x"}, user={"external_id": "t", "email": person})
        settings = msgspec.structs.replace(cell_settings(stack, topo, region), webhooks_allow_loopback=True)

        def close_issue(host: str, number: int) -> BaseException | None:
            sql(db, "UPDATE integrations SET config = jsonb_set(config, '{host}', to_jsonb($2::text)) "
                    "WHERE project_id = $1 AND provider = 'email'", uuid.UUID(p["id"]), host)

            async def run() -> BaseException | None:
                pool = await create_pool(settings.database_url, 2)
                try:
                    async with httpx.AsyncClient(trust_env=False) as http:
                        await issue_closed({"pool": pool, "settings": settings, "http": http},
                                           {"interaction_id": a, "provider": "jira",
                                            "external_url": f"https://acme.atlassian.net/browse/W-{number}"})
                    return None
                except NotSent as exc:
                    return exc
                finally:
                    await pool.close()

            return asyncio.run(run())

        assert close_issue("smtp.tls.test", 1) is None
        (message,) = box.to(person)
        assert message["tls"] and "W-1" in message["message"].get_content()
        # The same server under a name its certificate does not carry: nothing is sent, the job will retry.
        failed = close_issue("other.tls.test", 2)
        assert isinstance(failed, NotSent) and person not in str(failed) and "SMTP session failed" in str(failed)
        assert len(box.to(person)) == 1
    finally:
        controller.stop()
