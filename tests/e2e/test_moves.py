"""Moving a project between regions: under steady ingest, keys unchanged, nothing lost, nothing left behind.

A private topology (the shared stack is not disturbed) whose router copies in
small batches with a pause between them, so a move lasts long enough for ingest
to go on during the copy and for the router to be killed in the middle of it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook as Verifier

from cell import sealed
from cell import secrets as at_rest
from cell.residency import receipts
from cell.storage import ObjectStore
from common.ids import uuid7
from common.signing import Actor, sign
from relay import residency
from relay.devstack import ROOT
from tests.conftest import Admin, Stack, problem, sql, until
from tests.e2e.test_identity import _hash
from tests.e2e.test_webhook_delivery import Receiver
from tests.fakes.github import FakeGitHub
from tests.services import StorePostgres

BATCH_ROWS = 20
ROUTER_ENV = {"RELAY_MOVE_BATCH_ROWS": str(BATCH_ROWS), "RELAY_MOVE_PAUSE_SECONDS": "0.1",
              "RELAY_MOVE_POLL_SECONDS": "0.3", "RELAY_MOVE_PROPAGATION_SECONDS": "0.3"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
FINISHED = ("purged", "failed")


@pytest.fixture(scope="module")
def moving(pg: StorePostgres, scratch: Path) -> Iterator[dict[str, Any]]:
    """A private topology for moves."""
    stack = Stack(pg, scratch, "moves", router_env=ROUTER_ENV)
    router = httpx.Client(base_url=stack.dev.topology["router"]["url"], timeout=30, trust_env=False)
    try:
        yield {"stack": stack, "router": router, "topo": stack.dev.topology}
    finally:
        router.close()
        stack.close()


def _objects(topo: dict[str, Any], region: str) -> Path:
    return Path(urlparse(topo["cells"][region]["object_store"]).path)


def _secrets(stack: Stack) -> dict[str, str]:
    found: dict[str, str] = json.loads((stack.dev.state_dir / "secrets.json").read_text())
    return found


def _wait_move(router: httpx.Client, pid: str, h: dict[str, str], *, until: tuple[str, ...] = FINISHED,
               timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = router.get(f"/v1/projects/{pid}/move", headers=h)
        assert r.status_code == 200, r.text
        move: dict[str, Any] = r.json()
        if move["state"] in until:
            return move
        assert time.monotonic() < deadline, f"move still {move['state']} ({move['step']}): {move['error']}"
        time.sleep(0.2)


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(url + "/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"{url} not ready")


class Loader(threading.Thread):
    """An SDK under steady load: bug reports, votes and chat messages, each retried on 503 until acknowledged."""

    def __init__(self, url: str, key: dict[str, Any], item_id: str, conversation: dict[str, Any], marker: str):
        super().__init__(daemon=True)
        self.url, self.h, self.item_id, self.conversation, self.marker = url, key["h"], item_id, conversation, marker
        self.acked: dict[str, list[str]] = {"interactions": [], "votes": [], "messages": []}
        self.statuses: Counter[int] = Counter()
        self.regions: list[str] = []
        self.acked_in: Counter[tuple[str, str]] = Counter()  # (kind, region) of acknowledged writes
        self.unexpected: list[str] = []
        self.halt = threading.Event()

    def _send(self, client: httpx.Client, path: str, body: dict[str, Any],
              headers: dict[str, str] | None = None) -> httpx.Response | None:
        deadline = time.monotonic() + 60
        while True:
            r = client.post(path, json=body, headers={**self.h, **(headers or {})})
            self.statuses[r.status_code] += 1
            if r.status_code == 503 and time.monotonic() < deadline:
                if not r.headers.get("retry-after"):
                    self.unexpected.append(f"503 without Retry-After: {r.text[:200]}")
                time.sleep(0.25)  # a client may come back sooner than Retry-After asks
                continue
            if r.status_code != 201:
                self.unexpected.append(f"{path}: {r.status_code} {r.text[:300]}")
                return None
            self.regions.append(r.headers.get("x-relay-region", "?"))
            return r

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as client:
            n = 0
            while not self.halt.is_set():
                n += 1
                if n % 3 == 1:
                    iid = str(uuid7())
                    if self._send(client, "/v1/ingest/interactions", {
                            "id": iid, "type": "bug", "content": {"text": f"load {n} {self.marker}"},
                            "logs": {"console": [{"level": "error", "message": f"boom {n}"}]}}):
                        self.acked["interactions"].append(iid)
                        self.acked_in["interactions", self.regions[-1]] += 1
                elif n % 3 == 2:
                    session = str(uuid7())
                    if self._send(client, f"/v1/ingest/feedback-items/{self.item_id}/votes", {"session_id": session}):
                        self.acked["votes"].append(session)
                else:
                    mid = str(uuid7())
                    if self._send(client, f"/v1/ingest/conversations/{self.conversation['id']}/messages",
                                  {"id": mid, "body": f"still there? {n}"},
                                  {"X-Relay-Conversation-Token": self.conversation["token"]}):
                        self.acked["messages"].append(mid)
                time.sleep(0.01)


def _rows_naming(dsn: str, needle: str) -> dict[str, int]:
    """Every table of a database, scanned whole (`row::text LIKE`), with how many rows mention `needle`."""
    tables = [r["table_name"] for r in sql(dsn, """SELECT table_name FROM information_schema.tables
                                                    WHERE table_schema = 'public' AND table_type = 'BASE TABLE'""")]
    found = {}
    for table in tables:
        n = sql(dsn, f'SELECT count(*) AS n FROM "{table}" x WHERE x::text LIKE $1', f"%{needle}%")[0]["n"]
        if n:
            found[table] = n
    return found


def _files(root: Path, pid: str) -> list[Path]:
    base = root / "projects" / pid
    return [p for p in base.rglob("*") if p.is_file()] if base.exists() else []


def test_who_may_move_a_project_and_where(moving: dict[str, Any]) -> None:
    router = moving["router"]
    owner, other = Admin(router), Admin(router)
    project = owner.project("us-west")
    pid = project["id"]
    url = f"/v1/projects/{pid}/move"
    problem(router.get(url, headers=owner.h), 404)
    problem(router.post(url, json={"to_region": "eu-west"}, headers=other.h), 404)  # not a member: never say
    problem(router.post(url, json={"to_region": "eu-west"}), 401)
    owner.invite(project, other, "admin")
    assert "owner" in problem(router.post(url, json={"to_region": "eu-west"}, headers=other.h), 403)["detail"]
    admin_key = owner.key(project, ["admin"])
    problem(router.post(url, json={"to_region": "eu-west"}, headers=admin_key["h"]), 403)
    elsewhere = owner.project("eu-west")
    problem(router.post(f"/v1/projects/{elsewhere['id']}/move", json={"to_region": "us-west"},
                        headers=admin_key["h"]), 404)
    bad = problem(router.post(url, json={"to_region": "mars-north"}, headers=owner.h), 422)
    assert bad["errors"][0]["pointer"] == "/to_region" and "eu-west" in bad["errors"][0]["message"]
    missing = problem(router.post(url, json={}, headers=owner.h), 422)
    assert missing["errors"][0]["pointer"] == "/to_region"
    assert "already lives in us-west" in problem(router.post(url, json={"to_region": "us-west"},
                                                             headers=owner.h), 409)["detail"]
    problem(router.get(url, headers=owner.h), 404)  # refusals start nothing

    r = router.post(url, json={"to_region": "eu-west"}, headers=owner.h)
    assert r.status_code == 202, r.text
    started = r.json()
    assert {k: started[k] for k in ("project_id", "from_region", "to_region", "state")} == {
        "project_id": pid, "from_region": "us-west", "to_region": "eu-west", "state": "copying"}
    uuid.UUID(started["move_id"])
    assert "under way" in problem(router.post(url, json={"to_region": "eu-west"}, headers=owner.h), 409)["detail"]
    # Members and the project's keys may follow it; nobody else.
    assert router.get(url, headers=other.h).json()["move_id"] == started["move_id"]
    assert router.get(url, headers=admin_key["h"]).json()["move_id"] == started["move_id"]
    problem(router.get(url, headers=Admin(router).h), 404)
    problem(router.get(f"/v1/projects/{elsewhere['id']}/move", headers=admin_key["h"]), 404)
    done = _wait_move(router, pid, owner.h)
    assert (done["state"], done["percent"], done["error"]) == ("purged", 100, None), done
    assert router.get(f"/v1/projects/{pid}", headers=owner.h).json()["region"] == "eu-west"
    assert [p["region"] for p in router.get("/v1/projects", headers=owner.h).json()["data"]
            if p["id"] == pid] == ["eu-west"]
    # The admin key moved with it and still acts as admin, now in eu-west.
    r = router.get(f"/v1/projects/{pid}/api-keys", headers=admin_key["h"])
    assert r.status_code == 200 and r.headers["x-relay-region"] == "eu-west", r.text
    assert admin_key["key_prefix"] in [k["key_prefix"] for k in r.json()["data"]]


def test_a_project_under_load_moves_with_every_acknowledged_write(moving: dict[str, Any]) -> None:
    stack, router, topo = moving["stack"], moving["router"], moving["topo"]
    us, eu = topo["cells"]["us-west"]["database_url"], topo["cells"]["eu-west"]["database_url"]
    owner = Admin(router)
    project = owner.project("us-west")
    pid = project["id"]
    sdk = owner.key(project, ["ingest"])
    reader = owner.key(project, ["read"])
    marker = f"movecanary{uuid.uuid4().hex[:12]}"

    # Before the move: canaries in every kind of data, a board item, a conversation, a screenshot.
    planted = residency.plant(topo["router"]["url"], pid, token=owner.token)
    assert planted.region == "us-west"
    item = router.post("/v1/ingest/feedback-items", json={"title": f"dark mode {marker}"}, headers=sdk["h"]).json()
    chat = router.post("/v1/ingest/conversations", headers=sdk["h"], json={
        "session_id": str(uuid7()), "body": f"hello {marker}", "user": {"external_id": f"u-{marker}"}}).json()
    bug = router.post("/v1/ingest/interactions", headers=sdk["h"],
                      json={"type": "bug", "content": {"text": f"screenshot attached {marker}"}}).json()
    shot = router.post(f"/v1/ingest/interactions/{bug['id']}/media", params={"kind": "screenshot"},
                       headers={**sdk["h"], "Content-Type": "image/png"}, content=PNG)
    assert shot.status_code == 201, shot.text
    before = sql(topo["router"]["database_url"], "SELECT epoch FROM project_directory WHERE id = $1",
                 uuid.UUID(pid))[0]["epoch"]

    loader = Loader(topo["router"]["url"], sdk, item["id"], chat, marker)
    loader.start()
    try:
        time.sleep(1.0)
        r = router.post(f"/v1/projects/{pid}/move", json={"to_region": "eu-west"}, headers=owner.h)
        assert r.status_code == 202, r.text
        seen_fenced = False
        reads_while_fenced: list[int] = []
        deadline = time.monotonic() + 150
        while True:  # follow it as a dashboard would
            move = router.get(f"/v1/projects/{pid}/move", headers=reader["h"]).json()
            seen_fenced = seen_fenced or move["state"] in ("fenced", "flipped")
            if move["state"] == "fenced":  # writes wait, reads are served
                reads_while_fenced.append(router.get(f"/v1/projects/{pid}/interactions", params={"limit": 1},
                                                     headers=reader["h"]).status_code)
            if move["state"] in FINISHED:
                break
            assert time.monotonic() < deadline, move
            time.sleep(0.1)
        time.sleep(1.0)  # the load goes on in the new region
    finally:
        loader.halt.set()
        loader.join(30)
    assert move["state"] == "purged", move
    assert seen_fenced and reads_while_fenced and set(reads_while_fenced) == {200}, reads_while_fenced
    assert loader.unexpected == [], loader.unexpected[:5]
    assert set(loader.statuses) <= {201, 503}, loader.statuses
    assert loader.statuses[503] >= 1  # the fence was felt: writes refused for a moment, then accepted
    acked = loader.acked
    assert min(len(v) for v in acked.values()) > 5, {k: len(v) for k, v in acked.items()}
    assert loader.regions[0] == "us-west" and loader.regions[-1] == "eu-west"
    assert set(loader.regions) == {"us-west", "eu-west"}

    # The move as the owner sees it.
    assert move["percent"] == 100 and move["error"] is None
    assert all(t["done"] and t["copied"] >= t["rows"] for t in move["progress"]["tables"]), move["progress"]
    names = [t["name"] for t in move["progress"]["tables"]]
    assert names[0] == "projects" and names.index("interactions") < names.index("interaction_logs")
    assert {"api_keys", "feedback_votes", "messages", "media", "audit_logs"} <= set(names)
    assert "outbox" not in names and "dead_letters" not in names
    verify = move["progress"]["verify"]
    assert verify["ok"] and verify["mismatched"] == [] and verify["objects"] >= 2

    # Every acknowledged write is in eu-west, read from its database directly.
    p = uuid.UUID(pid)
    ids = [uuid.UUID(i) for i in acked["interactions"]]
    assert sql(eu, "SELECT count(*) AS n FROM interactions WHERE project_id = $1 AND id = ANY($2::uuid[])",
               p, ids)[0]["n"] == len(ids)
    assert sql(eu, "SELECT count(*) AS n FROM interaction_logs WHERE project_id = $1 AND interaction_id = ANY($2)",
               p, ids)[0]["n"] == len(ids)
    votes = [uuid.UUID(s) for s in acked["votes"]]
    assert sql(eu, "SELECT count(*) AS n FROM feedback_votes WHERE project_id = $1 AND session_id = ANY($2)",
               p, votes)[0]["n"] == len(votes)
    counted = sql(eu, """SELECT vote_count, (SELECT count(*) FROM feedback_votes v WHERE v.feedback_item_id = i.id)
                           AS votes FROM feedback_items i WHERE id = $1""", uuid.UUID(item["id"]))[0]
    assert counted["vote_count"] == counted["votes"] == len(votes)
    messages = [uuid.UUID(m) for m in acked["messages"]]
    assert sql(eu, "SELECT count(*) AS n FROM messages WHERE project_id = $1 AND id = ANY($2)",
               p, messages)[0]["n"] == len(messages)
    assert sql(eu, "SELECT message_count FROM conversations WHERE id = $1",
               uuid.UUID(chat["id"]))[0]["message_count"] == len(messages) + 1
    media = sql(eu, "SELECT storage_key, sha256, size_bytes FROM media WHERE id = $1",
                uuid.UUID(shot.json()["id"]))[0]
    stored = _objects(topo, "eu-west") / media["storage_key"]
    assert stored.read_bytes() == PNG and media["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert dict(sql(eu, "SELECT state, epoch FROM projects WHERE id = $1", p)[0]) == {
        "state": "active", "epoch": before + 2}
    assert sql(eu, "SELECT count(*) AS n FROM moved_projects WHERE project_id = $1", p)[0]["n"] == 0
    audited = router.get(f"/v1/projects/{pid}/audit-logs", params={"action": "project.moved"}, headers=owner.h)
    assert audited.status_code == 200, audited.text
    entry = next(e for e in audited.json()["data"] if e["action"] == "project.moved")
    assert (entry["actor_type"], entry["actor_id"], entry["meta"]) == ("admin", owner.user["id"], {
        "from_region": "us-west", "to_region": "eu-west", "move_id": move["move_id"], "epoch": before + 2})

    # Nothing of it remains in us-west: every row of every table, every object, every canary.
    naming = _rows_naming(us, pid)  # only the tombstone, and the deletion receipt naming what it deleted
    assert set(naming) == {"moved_projects", "residency_reports"} and naming["moved_projects"] == 1, naming
    needles = [*planted.markers.values(), marker]
    for needle in needles:
        assert _rows_naming(us, needle) == {}, needle
    assert dict(sql(us, "SELECT region, epoch FROM moved_projects WHERE project_id = $1", p)[0]) == {
        "region": "eu-west", "epoch": before + 2}
    assert _files(_objects(topo, "us-west"), pid) == []
    us_store = ObjectStore(topo["cells"]["us-west"]["object_store"])
    hits, scanned = asyncio.run(residency.scan_database(us, needles))
    assert hits == [] and scanned["rows"] > 0
    assert asyncio.run(residency.scan_objects(us_store, needles))[0] == []
    assert asyncio.run(residency.scan_redis(topo["cells"]["us-west"]["redis_url"], needles))[0] == []
    home_hits, _ = asyncio.run(residency.scan_database(eu, needles))
    assert {h.marker for h in home_hits} >= {marker, planted.markers["text"]}
    assert len(_files(_objects(topo, "eu-west"), pid)) >= 2

    # The same SDK key, unchanged, ingests in eu-west; reads follow.
    r = router.post("/v1/ingest/interactions", json={"type": "bug", "content": {"text": "after"}}, headers=sdk["h"])
    assert r.status_code == 201 and r.headers["x-relay-region"] == "eu-west", r.text
    r = router.get(f"/v1/projects/{pid}/interactions", params={"limit": 1}, headers=reader["h"])
    assert r.status_code == 200 and r.headers["x-relay-region"] == "eu-west"
    assert {row["region"] for row in sql(topo["router"]["database_url"],
                                         "SELECT region FROM key_directory WHERE project_id = $1", p)} == {"eu-west"}
    assert dict(sql(topo["router"]["database_url"], "SELECT state::text, epoch FROM project_directory WHERE id = $1",
                    p)[0]) == {"state": "active", "epoch": before + 2}

    # The old cell, called directly with a correctly signed request, says where the project went.
    secrets = _secrets(stack)
    with httpx.Client(base_url=topo["cells"]["us-west"]["url"], timeout=10, trust_env=False) as cell:
        path = f"/v1/projects/{pid}/interactions"
        actor = Actor(kind="admin", project_id=pid, user_id=owner.user["id"], role="owner", epoch=before + 2)
        answer = problem(cell.get(path, headers=sign(secrets["us-west"].encode(), "GET", path, actor)), 421)
        assert answer["region"] == "eu-west"
        lost = msgspec.json.encode({"type": "bug", "content": {"text": "lost?"}})
        signed = sign(secrets["us-west"].encode(), "POST", "/v1/ingest/interactions",
                      Actor(kind="key", project_id=pid, key_prefix=sdk["key_prefix"], epoch=before), body=lost)
        answer = problem(cell.post("/v1/ingest/interactions", content=lost,
                                   headers={**sdk["h"], **signed, "content-type": "application/json"}), 421)
        assert answer["region"] == "eu-west"
        internal = f"/internal/moves/{pid}/state"  # the move's own endpoints answer the router acting as itself only
        problem(cell.get(internal, headers=sign(secrets["us-west"].encode(), "GET", internal, actor)), 403)
        assert cell.get(internal, headers=sign(secrets["us-west"].encode(), "GET", internal,
                                               Actor(kind="router"))).json()["state"] == "moved"
    with httpx.Client(base_url=topo["cells"]["eu-west"]["url"], timeout=10, trust_env=False) as cell:
        stale = Actor(kind="admin", project_id=pid, user_id=owner.user["id"], role="owner", epoch=before + 1)
        problem(cell.get(path, headers=sign(secrets["eu-west"].encode(), "GET", path, stale)), 421)

    # The deletion receipt: signed by us-west's key, chained in its residency reports, naming zero remains.
    receipt = move["receipt"]
    body = receipt["body"]
    assert (body["kind"], body["project_id"], body["region"], body["moved_to"], body["move_id"]) == (
        "deletion", pid, "us-west", "eu-west", move["move_id"])
    assert body["remaining"]["rows"] == 0 and body["remaining"]["objects"] == 0
    assert body["deleted"]["rows"]["interactions"] >= loader.acked_in["interactions", "us-west"] > 0
    assert body["deleted"]["objects"] >= 2
    signed_bytes = receipts.message(receipt["seq"], receipt["prev_hash"], body)
    assert hashlib.sha256(signed_bytes).hexdigest() == receipt["hash"]
    Ed25519PublicKey.from_public_bytes(base64.b64decode(receipt["public_key"])).verify(
        base64.b64decode(receipt["signature"]), signed_bytes)
    key = receipts.signing_key(secrets["us-west:secret_key"], "us-west")
    assert receipt["public_key"] == receipts.public_key_of(key)
    chain = [msgspec.convert({**dict(r), "body": json.loads(r["body"])}, receipts.Receipt) for r in sql(
        us, "SELECT seq, created_at, scope, audited_project, body, prev_hash, hash, signature, public_key"
            " FROM residency_reports ORDER BY seq")]
    assert receipts.verify_chain(chain, receipt["public_key"]).ok
    assert any(r.hash == receipt["hash"] for r in chain)


def test_a_move_interrupted_mid_copy_resumes_where_it_stopped(moving: dict[str, Any]) -> None:
    stack, router, topo = moving["stack"], moving["router"], moving["topo"]
    control = topo["router"]["database_url"]
    us, eu = topo["cells"]["us-west"]["database_url"], topo["cells"]["eu-west"]["database_url"]
    owner = Admin(router)
    project = owner.project("us-west")
    pid = project["id"]
    sdk = owner.key(project, ["ingest"])
    ids = []
    for n in range(8 * BATCH_ROWS):
        r = router.post("/v1/ingest/interactions", headers=sdk["h"], json={
            "type": "bug", "content": {"text": f"report {n}"}, "logs": {"console": [{"message": f"line {n}"}]}})
        assert r.status_code == 201, r.text
        ids.append(uuid.UUID(r.json()["id"]))
    r = router.post(f"/v1/projects/{pid}/move", json={"to_region": "eu-west"}, headers=owner.h)
    assert r.status_code == 202, r.text
    move_id = uuid.UUID(r.json()["move_id"])

    def progress() -> tuple[str, dict[str, Any]]:
        row = sql(control, "SELECT state, progress FROM moves WHERE id = $1", move_id)[0]
        return row["state"], {t["name"]: t for t in json.loads(row["progress"]).get("tables", [])}

    deadline = time.monotonic() + 60
    while True:  # kill the router in the middle of the interactions' copy
        state, tables = progress()
        assert state == "copying" and time.monotonic() < deadline, (state, tables)
        if tables.get("interactions", {}).get("copied", 0) >= BATCH_ROWS:
            break
        time.sleep(0.02)
    stack.dev.kill("router")
    state, tables = progress()
    assert state == "copying" and not tables["interaction_logs"]["done"], tables
    halfway = tables["interactions"]["copied"]
    assert 0 < halfway < len(ids) or not tables["interaction_logs"]["copied"]
    time.sleep(1.0)
    assert progress()[1]["interactions"]["copied"] == halfway  # nobody drives it while no router runs

    stack.dev.restart("router")
    _wait_ready(topo["router"]["url"])
    move = _wait_move(router, pid, owner.h)
    assert move["state"] == "purged", move
    copied = {t["name"]: t for t in move["progress"]["tables"]}
    # Resumed from its cursor: at most the one batch in flight at the crash was copied twice.
    assert len(ids) <= copied["interactions"]["copied"] <= len(ids) + BATCH_ROWS
    assert copied["interactions"]["rows"] == len(ids)
    assert sorted(r["id"] for r in sql(eu, "SELECT id FROM interactions WHERE project_id = $1",
                                       uuid.UUID(pid))) == sorted(ids)
    assert sql(eu, "SELECT count(*) AS n FROM interaction_logs WHERE project_id = $1",
               uuid.UUID(pid))[0]["n"] == len(ids)
    assert sql(us, "SELECT count(*) AS n FROM interactions WHERE project_id = $1", uuid.UUID(pid))[0]["n"] == 0
    r = router.post("/v1/ingest/interactions", headers=sdk["h"], json={"type": "bug", "content": {"text": "back"}})
    assert r.status_code == 201 and r.headers["x-relay-region"] == "eu-west"


def test_the_cli_moves_a_project_and_it_can_come_back(moving: dict[str, Any]) -> None:
    stack, router, topo = moving["stack"], moving["router"], moving["topo"]
    owner = Admin(router)
    project = owner.project("us-west")
    pid = project["id"]
    sdk = owner.key(project, ["ingest"])
    r = router.post("/v1/ingest/interactions", headers=sdk["h"], json={"type": "bug", "content": {"text": "x"}})
    assert r.status_code == 201

    def relay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay", "projects", "move", *args,
                               "--state-dir", str(stack.dev.state_dir)],
                              cwd=ROOT, capture_output=True, text=True, timeout=180)

    done = relay(pid, "--to", "eu-west", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    move = json.loads(done.stdout)
    assert (move["state"], move["from_region"], move["to_region"], move["percent"]) == (
        "purged", "us-west", "eu-west", 100)
    assert move["receipt"]["body"]["kind"] == "deletion"
    wrong = relay(pid, "--to", "eu-west")
    assert wrong.returncode == 1 and "already lives in eu-west" in wrong.stderr
    unknown = relay(pid, "--to", "mars-north", "--json")
    assert unknown.returncode == 2 and json.loads(unknown.stdout)["status"] == 422

    # And back, for people this time: a progress bar, then a summary naming the receipt.
    back = relay(pid, "--to", "us-west", "--wait", "--poll", "0.1")
    assert back.returncode == 0, back.stderr
    bars = [line for line in back.stderr.splitlines() if line.startswith("[")]
    assert bars and "copying" in bars[0] and bars[-1].startswith("[" + "#" * 30 + "] 100%  purged"), back.stderr
    assert back.stdout.startswith(f"moved {pid} from eu-west to us-west; eu-west purged (deletion receipt #")
    moved = _wait_move(router, pid, owner.h)
    assert (moved["state"], moved["from_region"], moved["to_region"]) == ("purged", "eu-west", "us-west")
    # us-west serves it again (its tombstone gone); eu-west now keeps one.
    r = router.post("/v1/ingest/interactions", headers=sdk["h"], json={"type": "bug", "content": {"text": "y"}})
    assert r.status_code == 201 and r.headers["x-relay-region"] == "us-west", r.text
    us, eu = topo["cells"]["us-west"]["database_url"], topo["cells"]["eu-west"]["database_url"]
    p = uuid.UUID(pid)
    assert sql(us, "SELECT count(*) AS n FROM interactions WHERE project_id = $1", p)[0]["n"] == 2
    assert sql(us, "SELECT count(*) AS n FROM moved_projects WHERE project_id = $1", p)[0]["n"] == 0
    assert sql(eu, "SELECT region FROM moved_projects WHERE project_id = $1", p)[0]["region"] == "us-west"
    assert sql(eu, "SELECT count(*) AS n FROM interactions WHERE project_id = $1", p)[0]["n"] == 0


def _sealed_values(dsn: str, pid: str) -> list[tuple[str, tuple[str, ...], dict[str, Any], str]]:
    """Every value of the project that looks sealed, in any table: (table, JSON path, its row, the value)."""
    found: list[tuple[str, tuple[str, ...], dict[str, Any], str]] = []
    tables = [r["table_name"] for r in sql(dsn, """SELECT table_name FROM information_schema.columns
                                                    WHERE table_schema = 'public' AND column_name = 'project_id'""")]
    for table in ["projects", *tables]:
        owner = "id" if table == "projects" else "project_id"
        for r in sql(dsn, f'SELECT to_jsonb(t)::text AS row FROM "{table}" t WHERE "{owner}" = $1', uuid.UUID(pid)):
            row = json.loads(r["row"])
            for column, value in row.items():
                inner = value.items() if isinstance(value, dict) else [(None, value)]
                for name, v in inner:
                    if at_rest.is_sealed(v):
                        found.append((table, (column,) if name is None else (column, name), row, v))
    return found


def test_secrets_sealed_with_the_source_key_open_in_the_target(moving: dict[str, Any]) -> None:
    """Integration tokens, webhook signing secrets and the identity secret are sealed with each cell's own key:
    a move opens them in the source and seals them in the target, those written during the copy too."""
    stack, router, topo = moving["stack"], moving["router"], moving["topo"]
    control = topo["router"]["database_url"]
    us, eu = topo["cells"]["us-west"]["database_url"], topo["cells"]["eu-west"]["database_url"]
    keys = _secrets(stack)
    assert keys["us-west:secret_key"] != keys["eu-west:secret_key"]  # as in production: one key per region
    owner = Admin(router)
    project = owner.project("us-west")
    pid, base = project["id"], f"/v1/projects/{project['id']}"
    sdk, writer = owner.key(project, ["ingest"]), owner.key(project, ["write"])
    github, receiver = FakeGitHub(), Receiver()
    try:
        for n in range(8 * BATCH_ROWS):  # enough rows that the copy lasts while the test writes
            r = router.post("/v1/ingest/interactions", headers=sdk["h"], json={
                "type": "bug", "content": {"text": f"report {n}"}, "logs": {"console": [{"message": f"line {n}"}]}})
            assert r.status_code == 201, r.text
        token = "ghp_" + uuid.uuid4().hex
        github.allow(token)
        config = {"owner": "acme", "repo": f"app-{uuid.uuid4().hex[:6]}", "token": token,
                  "webhook_secret": uuid.uuid4().hex, "api_url": github.url}
        r = router.put(f"{base}/integrations/github", headers=owner.h, json={"config": config})
        assert r.status_code == 201, r.text
        r = router.post(f"{base}/webhooks", headers=owner.h,
                        json={"url": receiver.url("/before"), "events": ["interaction.created"]})
        assert r.status_code == 201, r.text
        before_hook = r.json()
        r = router.post(f"{base}/identity-secret", headers=owner.h)
        assert r.status_code == 201, r.text
        identity = r.json()["secret"]
        r = router.patch(f"{base}/settings", headers=owner.h, json={"identity_verification": "required"})
        assert r.status_code == 200, r.text
        planted = _sealed_values(us, pid)
        assert {(t, p) for t, p, _, _ in planted} == {
            ("projects", ("sealed_secret",)), ("projects", ("identity_secret",)), ("webhooks", ("secret",)),
            ("integrations", ("config", "token")), ("integrations", ("config", "webhook_secret"))}

        r = router.post(f"{base}/move", json={"to_region": "eu-west"}, headers=owner.h)
        assert r.status_code == 202, r.text
        move_id = uuid.UUID(r.json()["move_id"])

        def copied() -> dict[str, Any]:
            row = sql(control, "SELECT state, progress FROM moves WHERE id = $1", move_id)[0]
            return {"state": row["state"], **{t["name"]: t for t in json.loads(row["progress"]).get("tables", [])}}

        deadline = time.monotonic() + 60
        while not all(copied().get(t, {}).get("done") for t in ("webhooks", "integrations")):
            assert copied()["state"] == "copying" and time.monotonic() < deadline, copied()
            time.sleep(0.02)
        # Both tables are copied: what changes now reaches the target through the change log only.
        r = router.post(f"{base}/webhooks", headers=owner.h,
                        json={"url": receiver.url("/during"), "events": ["interaction.created"]})
        assert r.status_code == 201, r.text
        during_hook = r.json()
        token = "ghp_" + uuid.uuid4().hex
        github.allow(token)
        r = router.put(f"{base}/integrations/github", headers=owner.h, json={"config": {**config, "token": token}})
        assert r.status_code == 200, r.text

        move = _wait_move(router, pid, owner.h)
        assert move["state"] == "purged" and move["error"] is None, move
        verify = move["progress"]["verify"]
        assert verify["ok"] and verify["mismatched"] == [], verify
        assert move["progress"]["changes_applied"] >= 2

        # In eu-west every sealed value of the project is sealed with eu-west's key, none with us-west's.
        arrived = _sealed_values(eu, pid)
        assert {(t, p) for t, p, _, _ in arrived} == {(t, p) for t, p, _, _ in planted}
        assert len([a for a in arrived if a[0] == "webhooks"]) == 2
        registry = {(f.table, f.path): f for f in sealed.FIELDS if f.table != "integrations"} | {
            (f.table, f.path): f for f in sealed.fields_of("integrations") if f.purpose({"provider": "github"})}
        for table, where, row, value in arrived:
            purpose = registry[table, where].purpose(row)
            assert purpose is not None
            at_rest.unseal(keys["eu-west:secret_key"], uuid.UUID(pid), purpose, value)
            with pytest.raises(at_rest.SecretError):
                at_rest.unseal(keys["us-west:secret_key"], uuid.UUID(pid), purpose, value)

        # A delivery from eu-west verifies with each webhook's secret as shown at its creation.
        r = router.post("/v1/ingest/interactions", headers=sdk["h"], json={"type": "bug", "content": {"text": "after"}})
        assert r.status_code == 201 and r.headers["x-relay-region"] == "eu-west", r.text
        iid = r.json()["id"]
        def deliveries(path: str) -> list[dict[str, Any]]:
            return [q for q in receiver.at(path) if iid.encode() in q["body"]]

        for hook, path in ((before_hook, "/before"), (during_hook, "/during")):
            [delivered] = until(lambda: deliveries(path), 30, path)  # noqa: B023
            payload = Verifier(hook["secret"]).verify(delivered["body"], delivered["headers"])
            assert payload["type"] == "interaction.created" and payload["data"]["id"] == iid

        # The issue is filed with the token set during the move, the one the provider knows.
        r = router.post(f"{base}/interactions/{iid}/links", headers=writer["h"], json={"provider": "github"})
        assert r.status_code == 202, r.text
        calls = until(lambda: github.calls("POST", f"/repos/acme/{config['repo']}/issues"), 30, "the issue")
        assert calls[0].headers["authorization"] == f"Bearer {token}"
        link = until(lambda: [d for d in router.get(f"{base}/interactions/{iid}/links", headers=owner.h).json()["data"]
                              if d["kind"] == "issue"], 30, "the link")
        assert link[0]["provider"] == "github"

        # Identity verification is required, and a user_hash made with the secret of before proves the user.
        user = f"alice-{uuid.uuid4().hex[:6]}"
        r = router.post("/v1/ingest/interactions", headers=sdk["h"], json={
            "type": "bug", "content": {"text": "x"}, "user": {"external_id": user, "user_hash": _hash(identity, user)}})
        assert r.status_code == 201 and r.headers["x-relay-region"] == "eu-west", r.text
        problem(router.post("/v1/ingest/interactions", headers=sdk["h"], json={
            "type": "bug", "content": {"text": "x"}, "user": {"external_id": user, "user_hash": _hash("ris_x", user)}}),
            401)
    finally:
        github.close()
        receiver.close()


def test_a_secret_that_does_not_open_in_the_source_stops_the_move(moving: dict[str, Any]) -> None:
    """A value the source cannot open is never copied as garbage: the move is given up, saying which."""
    router, topo = moving["router"], moving["topo"]
    us, eu = topo["cells"]["us-west"]["database_url"], topo["cells"]["eu-west"]["database_url"]
    owner = Admin(router)
    project = owner.project("us-west")
    pid = project["id"]
    sdk = owner.key(project, ["ingest"])
    r = router.post(f"/v1/projects/{pid}/webhooks", headers=owner.h,
                    json={"url": "http://127.0.0.1:9/hook", "events": ["interaction.created"]})
    assert r.status_code == 201, r.text
    hook = r.json()["id"]
    foreign = at_rest.seal("another-cells-key-not-in-the-us-west-ring", uuid.UUID(pid), f"webhook:{hook}:secret",
                           "whsec_c2VjcmV0IGZyb20gZWxzZXdoZXJl")
    sql(us, "UPDATE webhooks SET secret = $2 WHERE id = $1", uuid.UUID(hook), foreign)

    r = router.post(f"/v1/projects/{pid}/move", json={"to_region": "eu-west"}, headers=owner.h)
    assert r.status_code == 202, r.text
    move = _wait_move(router, pid, owner.h, timeout=60)
    assert move["state"] == "failed", move
    assert f"webhooks.secret of row {hook} does not open with this cell's key ring" in move["error"], move
    assert "abandoned" in move["error"] and "whsec_" not in move["error"] and foreign not in move["error"]
    # The project stays where it was, serving; the target holds nothing of it.
    assert router.get(f"/v1/projects/{pid}", headers=owner.h).json()["region"] == "us-west"
    r = router.post("/v1/ingest/interactions", headers=sdk["h"], json={"type": "bug", "content": {"text": "still"}})
    assert r.status_code == 201 and r.headers["x-relay-region"] == "us-west", r.text
    assert _rows_naming(eu, pid) == {}
    logs = "".join(p.read_text(errors="replace") for p in moving["stack"].dev.log_dir.glob("*") if p.is_file())
    assert "does not open" in logs  # the router logged the refusal, without the value
    assert foreign not in logs and "whsec_c2VjcmV0IGZyb20gZWxzZXdoZXJl" not in logs
