"""Outbound webhook delivery by the cell's workers: signed per Standard Webhooks, retried, SSRF-guarded.

Receivers are small local HTTP servers that verify every request with the
`standardwebhooks` package, as a customer's endpoint would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from saq import Queue
from standardwebhooks import Webhook as Verifier

from cell import netguard
from cell.jobs import registry
from cell.settings import CellSettings
from cell.webhooks import delivery
from cell.webhooks.jobs import publish
from common.ids import uuid7
from common.pg import create_pool
from relay.devstack import DevStack
from tests.conftest import Admin, sql, until
from tests.e2e.test_integrations import cell_settings

ALL = ["interaction.created", "interaction.updated", "message.created", "vote.created"]
NEEDED = {"interaction.created": 2, "interaction.updated": 1, "message.created": 1, "vote.created": 1}


class Receiver:
    """A local HTTP endpoint that records every POST and answers with scripted status codes per path."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    outer.requests.append({"path": self.path, "headers": headers, "body": body, "at": time.time()})
                    planned = outer.script.get(self.path)
                    status = planned.pop(0) if planned else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def wait(self, path: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """The requests to `path` once there are at least `count` of them."""
        return wait_for(lambda: (lambda got: got if len(got) >= count else None)(self.at(path)), timeout,
                        f"{count} requests to {path}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy, within a deadline."""
    return until(check, timeout, what, every=0.1)


def job_status(topo: dict[str, Any], region: str, key: str) -> str | None:
    """The saq status of one queued job of the region's worker (None if not queued yet)."""

    async def run() -> str | None:
        queue = Queue.from_url(topo["cells"][region]["redis_url"], name=f"relay-{region}")
        try:
            job = await queue.job(key)
            return None if job is None else str(job.status.value)
        finally:
            await queue.disconnect()

    return asyncio.run(run())


def wait_jobs(topo: dict[str, Any], region: str, outbox_id: int, names: list[str] | None = None,
              timeout: float = 30) -> dict[str, str]:
    """Wait until every consumer (or those named) of an outbox row finished; their final statuses."""
    kind = sql(topo["cells"][region]["database_url"], "SELECT kind FROM outbox WHERE id = $1", outbox_id)[0]["kind"]
    names = names or [name for name, job in registry()[0].items() if job.kind == kind]
    done: dict[str, str] = {}

    def finished() -> bool:
        for name in names:
            status = job_status(topo, region, f"outbox:{outbox_id}:{name}")
            if status in ("complete", "failed", "aborted"):
                done[name] = status
        return len(done) == len(names)

    wait_for(finished, timeout, f"jobs of outbox row {outbox_id}")
    return done


def outbox_id(topo: dict[str, Any], region: str, kind: str, field: str, value: str) -> int:
    """The outbox row of an event, once the API wrote it."""
    rows = sql(topo["cells"][region]["database_url"],
               "SELECT id FROM outbox WHERE kind = $1 AND payload->>$2 = $3 ORDER BY id", kind, field, value)
    assert len(rows) == 1, rows
    return int(rows[0]["id"])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def _hook(router: httpx.Client, admin: Admin, project: dict[str, Any], url: str, events: list[str],
          enabled: bool = True) -> dict[str, Any]:
    r = router.post(f"/v1/projects/{project['id']}/webhooks", headers=admin.h,
                    json={"url": url, "events": events, "enabled": enabled})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _ingest(router: httpx.Client, key: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _deliveries(router: httpx.Client, admin: Admin, project: dict[str, Any], hook: dict[str, Any]) -> list[Any]:
    r = router.get(f"/v1/projects/{project['id']}/webhooks/{hook['id']}/deliveries", headers=admin.h)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _verified(hook: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The payload as a receiver gets it after checking the signature with the webhook's secret."""
    payload: dict[str, Any] = Verifier(hook["secret"]).verify(request["body"], request["headers"])
    assert request["headers"]["content-type"] == "application/json"
    assert set(payload) == {"type", "timestamp", "data"}
    datetime.fromisoformat(payload["timestamp"])
    return payload


def _row(topo: dict[str, Any], region: str, delivery_id: str) -> dict[str, Any]:
    rows = sql(topo["cells"][region]["database_url"],
               """SELECT status, attempts, last_status_code, last_error, delivered_at,
                         extract(epoch FROM next_attempt_at - now()) AS due_in
                    FROM webhook_deliveries WHERE id = $1""", uuid.UUID(delivery_id))
    return dict(rows[0])


def test_every_event_kind_is_signed_and_delivered_once(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                                       receiver: Receiver) -> None:
    p, other = admin.project("eu-west"), admin.project("eu-west")
    key, other_key = admin.key(p, ["ingest"]), admin.key(other, ["ingest"])
    tag = secrets.token_hex(4)
    everything = _hook(router, admin, p, receiver.url(f"/all-{tag}"), ALL)
    votes = _hook(router, admin, p, receiver.url(f"/votes-{tag}"), ["vote.created"])
    off = _hook(router, admin, p, receiver.url(f"/off-{tag}"), ALL, enabled=False)
    theirs = _hook(router, admin, other, receiver.url(f"/other-{tag}"), ALL)

    bug = _ingest(router, key, content={"title": "Export fails", "description": "CSV export spins forever"},
                  severity="med", user={"external_id": "u-1"})
    r = router.patch(f"/v1/projects/{p['id']}/interactions/{bug['id']}", headers=admin.h, json={"status": "triaging"})
    assert r.status_code == 200, r.text
    item = router.post(f"/v1/projects/{p['id']}/feedback-items", headers=admin.h, json={"title": "Dark mode"}).json()
    session = str(uuid7())
    r = router.post(f"/v1/ingest/feedback-items/{item['id']}/votes", headers=key["h"], json={"session_id": session})
    assert r.status_code == 201, r.text
    vote = r.json()
    r = router.post("/v1/ingest/conversations", headers=key["h"], json={"session_id": session, "body": "Hi there"})
    assert r.status_code == 201, r.text
    conversation = r.json()
    foreign = _ingest(router, other_key, content={"text": "another project's bug"})

    def ours(payload: dict[str, Any]) -> bool:
        # Workers may update the interaction too (enrichment, integrations); the events asserted here are ours.
        return payload["type"] != "interaction.updated" or "status" in payload["data"]["changed_fields"]

    def arrived() -> list[dict[str, Any]] | None:
        got = receiver.at(f"/all-{tag}")
        kinds = [payload["type"] for payload in map(lambda r: _verified(everything, r), got) if ours(payload)]
        return got if all(kinds.count(k) >= n for k, n in NEEDED.items()) else None

    got = wait_for(arrived, 30, "every event delivered")
    payloads = [_verified(everything, req) for req in got]
    mine = [p_ for p_ in payloads if ours(p_)]
    assert sorted(p_["type"] for p_ in mine) == ["interaction.created", "interaction.created",
                                                  "interaction.updated", "message.created", "vote.created"]
    by_type = {p_["type"]: p_["data"] for p_ in mine if p_["type"] != "interaction.created"}
    created = {p_["data"]["id"]: p_["data"] for p_ in mine if p_["type"] == "interaction.created"}
    assert created[bug["id"]]["content"] == {"title": "Export fails", "description": "CSV export spins forever"}
    assert created[bug["id"]]["project_id"] == p["id"] and created[bug["id"]]["severity"] == "med"
    chat = next(d for i, d in created.items() if i != bug["id"])
    assert chat["type"] == "chat" and chat["content"]["conversation_id"] == conversation["id"]
    assert by_type["interaction.updated"]["id"] == bug["id"]
    assert by_type["interaction.updated"]["status"] == "triaging"
    assert by_type["interaction.updated"]["changed_fields"] == ["status"]
    assert by_type["vote.created"] == {"id": vote["id"], "feedback_item_id": item["id"], "session_id": session,
                                       "user_id": None, "created_at": by_type["vote.created"]["created_at"],
                                       "vote_count": 1}
    message = by_type["message.created"]
    assert (message["conversation_id"], message["direction"], message["body"]) == (conversation["id"], "inbound",
                                                                                   "Hi there")
    # The vote-only webhook got the vote, signed with its own secret; the disabled one nothing.
    (vote_request,) = receiver.wait(f"/votes-{tag}", 1)
    assert _verified(votes, vote_request)["data"]["id"] == vote["id"]
    (foreign_request,) = receiver.wait(f"/other-{tag}", 1)
    assert _verified(theirs, foreign_request)["data"]["id"] == foreign["id"]

    # The delivery history: one row per event and webhook, delivered on the first attempt; the webhook-id a
    # receiver dedupes on is the delivery's id. Nothing crossed projects, nothing went to the disabled hook.
    ids = {req["headers"]["webhook-id"] for req in got}
    assert len(ids) == len(got)  # one request per delivery: nothing sent twice
    history = wait_for(lambda: (lambda d: d if all(x["status"] == "delivered" for x in d if x["id"] in ids) else None)(
        _deliveries(router, admin, p, everything)), 15, "deliveries recorded")
    sent = [d for d in history if d["id"] in ids]
    assert len(sent) == len(got) and {d["event"] for d in sent} == set(ALL)
    assert all((d["attempts"], d["last_status_code"], d["last_error"]) == (1, 200, None) for d in sent)
    assert all(d["delivered_at"] and "payload" not in d for d in sent)
    assert len(_deliveries(router, admin, p, votes)) == 1
    assert _deliveries(router, admin, p, off) == [] and receiver.at(f"/off-{tag}") == []
    assert foreign["id"] not in {p_["data"]["id"] for p_ in payloads}
    assert len(_deliveries(router, admin, other, theirs)) >= 1


def test_retries_with_backoff_and_the_same_webhook_id(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                                      receiver: Receiver) -> None:
    p = admin.project("us-west")
    key = admin.key(p, ["ingest"])
    path = f"/flaky-{secrets.token_hex(4)}"
    receiver.script[path] = [500, 500]
    hook = _hook(router, admin, p, receiver.url(path), ["interaction.created"])
    bug = _ingest(router, key, content={"text": "flaky receiver"})
    db = topo["cells"]["us-west"]["database_url"]

    (first,) = receiver.wait(path, 1)
    delivery_id = first["headers"]["webhook-id"]
    row = wait_for(lambda: (lambda r: r if r["attempts"] == 1 and r["last_status_code"] == 500 else None)(
        _row(topo, "us-west", delivery_id)), 10, "first failure recorded")
    assert (row["status"], row["last_error"], row["delivered_at"]) == ("pending", "HTTP 500", None)
    assert 0 < row["due_in"] <= 6.1  # 5 s ± 20 %

    receiver.wait(path, 2, timeout=20)  # the cron picks it up once due
    # (A claimed attempt holds the row for the 60 s lease until its outcome is recorded.)
    row = wait_for(lambda: (lambda r: r if r["attempts"] == 2 and r["due_in"] < 30 else None)(
        _row(topo, "us-west", delivery_id)), 10, "second failure recorded")
    assert (row["last_status_code"], row["last_error"]) == (500, "HTTP 500")
    assert row["status"] == "pending" and 10 < row["due_in"] <= 24.1  # 20 s ± 20 %
    # Skip the wait rather than sleep through it.
    sql(db, "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE id = $1 AND attempts = 2",
        uuid.UUID(delivery_id))
    attempts = receiver.wait(path, 3, timeout=20)
    row = wait_for(lambda: (lambda r: r if r["status"] == "delivered" else None)(_row(topo, "us-west", delivery_id)),
                   10, "delivery recorded")
    assert (row["attempts"], row["last_status_code"], row["last_error"]) == (3, 200, None)
    assert row["delivered_at"] is not None and row["due_in"] is None

    # Every attempt: the same id and body, signed afresh; a receiver verifies each and dedupes on the id.
    assert {a["headers"]["webhook-id"] for a in attempts} == {delivery_id}
    assert len({a["body"] for a in attempts}) == 1
    assert all(_verified(hook, a)["data"]["id"] == bug["id"] for a in attempts)
    stamps = [int(a["headers"]["webhook-timestamp"]) for a in attempts]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 5
    assert attempts[1]["at"] - attempts[0]["at"] >= 3.9
    history = _deliveries(router, admin, p, hook)
    assert [(d["id"], d["status"], d["attempts"]) for d in history] == [(delivery_id, "delivered", 3)]


def test_gives_up_after_the_last_attempt(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                        receiver: Receiver) -> None:
    p = admin.project("us-west")
    key = admin.key(p, ["ingest"])
    path = f"/down-{secrets.token_hex(4)}"
    receiver.script[path] = [503] * 20
    hook = _hook(router, admin, p, receiver.url(path), ["interaction.created"])
    _ingest(router, key, content={"text": "receiver is down"})
    (first,) = receiver.wait(path, 1)
    delivery_id = first["headers"]["webhook-id"]
    wait_for(lambda: _row(topo, "us-west", delivery_id)["last_status_code"] == 503, 10, "failure recorded")
    # As if the earlier retries had happened: the next attempt is the last.
    sql(topo["cells"]["us-west"]["database_url"],
        """UPDATE webhook_deliveries SET attempts = $2, next_attempt_at = now()
            WHERE id = $1 AND attempts = 1 AND status = 'pending'""", uuid.UUID(delivery_id),
        delivery.MAX_ATTEMPTS - 1)
    receiver.wait(path, 2, timeout=20)
    row = wait_for(lambda: (lambda r: r if r["status"] == "failed" else None)(_row(topo, "us-west", delivery_id)),
                   10, "delivery given up")
    assert (row["attempts"], row["last_status_code"], row["last_error"]) == (delivery.MAX_ATTEMPTS, 503, "HTTP 503")
    assert row["due_in"] is None and row["delivered_at"] is None
    d = _deliveries(router, admin, p, hook)[0]
    assert (d["status"], d["attempts"], d["last_status_code"]) == ("failed", delivery.MAX_ATTEMPTS, 503)
    assert len(receiver.at(path)) == 2


def test_destination_checked_again_at_delivery(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                               receiver: Receiver) -> None:
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    db = topo["cells"]["eu-west"]["database_url"]
    tag = secrets.token_hex(4)
    private = _hook(router, admin, p, receiver.url(f"/private-{tag}"), ["interaction.created"])
    metadata = _hook(router, admin, p, receiver.url(f"/metadata-{tag}"), ["interaction.created"])
    # The URLs passed the guard when set; now they point elsewhere (as a changed DNS answer would).
    sql(db, "UPDATE webhooks SET url = 'http://10.0.0.1:8080/hook' WHERE id = $1", uuid.UUID(private["id"]))
    sql(db, "UPDATE webhooks SET url = 'http://169.254.169.254/latest/meta-data/' WHERE id = $1",
        uuid.UUID(metadata["id"]))
    _ingest(router, key, content={"text": "goes nowhere"})

    for hook, expected in ((private, "private address (10.0.0.1)"), (metadata, "link-local address (169.254.169.254)")):
        (d,) = wait_for(lambda h=hook: (lambda ds: ds if ds and ds[0]["status"] != "pending" else None)(
            _deliveries(router, admin, p, h)), 15, "refusal recorded")
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("failed", 1, None)
        assert d["last_error"].startswith("destination refused: ") and expected in d["last_error"], d
    assert receiver.at(f"/private-{tag}") == [] and receiver.at(f"/metadata-{tag}") == []


def test_test_delivery_is_sent_by_the_sweep(router: httpx.Client, admin: Admin, receiver: Receiver) -> None:
    p = admin.project("us-west")
    path = f"/ping-{secrets.token_hex(4)}"
    hook = _hook(router, admin, p, receiver.url(path), ["vote.created"])
    r = router.post(f"/v1/projects/{p['id']}/webhooks/{hook['id']}/test", headers=admin.h)
    assert r.status_code == 202, r.text
    (request,) = receiver.wait(path, 1, timeout=20)
    payload = _verified(hook, request)
    assert payload["type"] == "webhook.test" and payload["data"] == {"webhook_id": hook["id"], "project_id": p["id"]}
    assert request["headers"]["webhook-id"] == r.json()["id"]


def _settings(stack: DevStack, topo: dict[str, Any], region: str, loopback: bool = True) -> CellSettings:
    return msgspec.structs.replace(cell_settings(stack, topo, region), webhooks_allow_loopback=loopback)


def test_connects_only_to_the_vetted_address(stack: DevStack, topo: dict[str, Any], receiver: Receiver,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is resolved once, by the guard; the request goes to that address, so a resolver that answers
    differently a moment later (DNS rebinding) cannot redirect it."""
    answers: list[list[str]] = []

    async def resolver(host: str, port: int) -> list[netguard.IPAddress]:
        assert host == "hooks.rebind.test"
        return [ipaddress.ip_address(a) for a in answers.pop(0)]

    monkeypatch.setattr(netguard, "resolve", resolver)
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    path = f"/rebind-{secrets.token_hex(4)}?token=abc"
    url = f"http://hooks.rebind.test:{receiver.port}{path}"
    payload = {"type": "webhook.test", "timestamp": datetime.now(UTC).isoformat(), "data": {"n": 1}}

    async def attempt(settings: CellSettings) -> delivery.Attempt:
        async with httpx.AsyncClient(trust_env=False) as http:
            return await delivery.send(http, settings, url, secret, "msg_rebind", payload)

    # The name does not exist in DNS: only the vetted address can have been used.
    answers.append(["127.0.0.1"])
    assert asyncio.run(attempt(_settings(stack, topo, "us-west"))) == delivery.Attempt(200, None)
    (request,) = receiver.at(path)
    assert request["headers"]["host"] == f"hooks.rebind.test:{receiver.port}"
    assert Verifier(secret).verify(request["body"], request["headers"]) == json.loads(msgspec.json.encode(payload))
    # The next answer is private: refused before any connection, for good.
    answers.append(["10.0.0.7"])
    refused = asyncio.run(attempt(_settings(stack, topo, "us-west")))
    assert (refused.status_code, refused.final) == (None, True) and "private address (10.0.0.7)" in str(refused.error)
    # Any refused address among the answers refuses the name; loopback too unless the operator allows it.
    answers.append(["127.0.0.1", "192.168.0.3"])
    assert asyncio.run(attempt(_settings(stack, topo, "us-west"))).final
    answers.append(["127.0.0.1"])
    assert "loopback" in str(asyncio.run(attempt(_settings(stack, topo, "us-west", loopback=False))).error)
    assert len(receiver.at(path)) == 1 and answers == []


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_is_verified_against_the_name(stack: DevStack, topo: dict[str, Any], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Connecting to the vetted address does not weaken TLS: SNI and the certificate check use the name."""
    cert, key = _certificate(tmp_path, "hooks.tls.test")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))  # trusts only this certificate
    monkeypatch.setattr(delivery, "_tls", lambda: client_tls)

    async def resolver(host: str, port: int) -> list[netguard.IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(netguard, "resolve", resolver)
    server = Receiver(server_tls)
    try:
        settings = _settings(stack, topo, "eu-west")
        secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
        payload = {"type": "webhook.test", "timestamp": datetime.now(UTC).isoformat(), "data": {}}

        async def attempt(name: str) -> delivery.Attempt:
            async with httpx.AsyncClient(trust_env=False) as http:
                return await delivery.send(http, settings, f"https://{name}:{server.port}/tls", secret, "msg_tls",
                                           payload)

        assert asyncio.run(attempt("hooks.tls.test")) == delivery.Attempt(200, None)
        (request,) = server.at("/tls")
        assert request["headers"]["host"] == f"hooks.tls.test:{server.port}"
        assert Verifier(secret).verify(request["body"], request["headers"])["type"] == "webhook.test"
        # Same address, another name: the certificate does not match it, so nothing is sent.
        refused = asyncio.run(attempt("other.tls.test"))
        assert refused == delivery.Attempt(None, "connection failed (ConnectError)")
        assert len(server.at("/tls")) == 1
    finally:
        server.close()


def test_fan_out_is_idempotent_per_event(router: httpx.Client, admin: Admin, stack: DevStack,
                                         topo: dict[str, Any], receiver: Receiver) -> None:
    """A retried job (same outbox event) queues and sends nothing twice, even when two runs overlap."""
    p = admin.project("us-west")
    key = admin.key(p, ["ingest"])
    path = f"/once-{secrets.token_hex(4)}"
    hook = _hook(router, admin, p, receiver.url(path), ["interaction.updated"])  # no real update will happen
    bug = _ingest(router, key, content={"text": "run me twice"})
    settings = _settings(stack, topo, "us-west")
    event = {"interaction_id": bug["id"], "fields": ["status"]}

    class FakeJob:
        def __init__(self, outbox: int) -> None:
            self.key = f"outbox:{outbox}:webhooks.interaction.updated"

    async def run() -> list[int]:
        pool = await create_pool(settings.database_url, 4)
        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                ctx = {"pool": pool, "settings": settings, "http": http, "job": FakeJob(9_000_000_001)}
                together = await asyncio.gather(publish(ctx, "interaction.updated", event),
                                                publish(ctx, "interaction.updated", event))
                again = await publish(ctx, "interaction.updated", event)
                other = await publish(dict(ctx, job=FakeJob(9_000_000_002)), "interaction.updated", event)
                return [*sorted(together), again, other]
        finally:
            await pool.close()

    assert asyncio.run(run()) == [0, 1, 0, 1]
    requests = receiver.wait(path, 2)
    history = _deliveries(router, admin, p, hook)
    assert len(history) == 2 and {d["status"] for d in history} == {"delivered"}
    assert sorted(r["headers"]["webhook-id"] for r in requests) == sorted(d["id"] for d in history)
    rows = sql(topo["cells"]["us-west"]["database_url"],
               "SELECT event_key, end_user_id FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY event_key",
               uuid.UUID(hook["id"]))
    assert [r["event_key"] for r in rows] == ["outbox:9000000001", "outbox:9000000002"]
    assert len(receiver.at(path)) == 2
