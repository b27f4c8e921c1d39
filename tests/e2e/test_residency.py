"""Residency you can prove: audits from the stores, canary scans across regions, signed hash-chained receipts.

The CLI runs as a real process against the session's topology (its state dir holds topology.json and the
secrets `relay dev` generated), reading each region's Postgres and object store directly, as an operator or
an auditor would.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.devstack import ROOT, DevStack
from tests.conftest import Admin, problem, sql

OLD = time.time() - 3600


def relay(stack: DevStack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `relay residency …` against the session's topology."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.run([sys.executable, "-m", "relay", "residency", *args, "--state-dir", str(stack.state_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, input=stdin)


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def _objects(topo: dict[str, Any], region: str) -> Path:
    return Path(urlparse(topo["cells"][region]["object_store"]).path)


def _execute(dsn: str, *statements: str | tuple[Any, ...]) -> None:
    """Statements (a tuple: with its arguments) on one connection, as a superuser bypassing foreign
    keys and triggers: what a bug, a bad migration or an intruder could leave behind."""
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                for statement in statements:
                    if isinstance(statement, tuple):
                        await conn.execute(*statement)
                    else:
                        await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _ingest(router: httpx.Client, key: dict[str, Any]) -> tuple[str, str]:
    """One interaction with a text attachment: rows and an object."""
    r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": {"text": "hi"}})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    m = router.post(f"/v1/ingest/interactions/{iid}/media", params={"kind": "attachment"}, content=b"notes\n",
                    headers={**key["h"], "Content-Type": "text/plain"})
    assert m.status_code == 201, m.text
    return str(iid), str(m.json()["id"])


# -- GET residency ---------------------------------------------------------------------------------------------


def test_a_fresh_project_is_clean_and_counted(router: httpx.Client, admin: Admin) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    r = router.get(f"/v1/projects/{pid}/residency", headers=admin.h)
    assert r.status_code == 200, r.text
    assert r.headers["x-relay-region"] == "eu-west"
    body = r.json()
    assert body["project_id"] == pid and body["region"] == "eu-west" and body["clean"] is True
    assert body["findings"] == {"orphan_objects": [], "missing_objects": [], "cross_references": [],
                                "recent_objects": 0}
    database, objects = body["stores"]
    assert database["kind"] == "database" and database["region"] == "eu-west"
    assert database["tables"]["projects"] == 1 and database["tables"]["privacy_rules"] == 3  # the default rules
    assert database["rows"] == sum(database["tables"].values())
    assert objects == {"kind": "object_storage", "region": "eu-west", "name": "eu-west object storage",
                       "prefix": f"projects/{pid}/", "objects": 0, "bytes": 0, "prefixes": {}}
    assert len(base64.b64decode(body["public_key"])) == 32
    assert body["last_audit"] is None

    key = admin.key(project, ["ingest", "read"])
    _ingest(router, key)
    counted = router.get(f"/v1/projects/{pid}/residency", headers=key["h"]).json()
    assert counted["clean"] is True
    tables = counted["stores"][0]["tables"]
    assert tables["interactions"] == 1 and tables["media"] == 1 and tables["api_keys"] == 1
    assert counted["stores"][1]["objects"] == 1 and counted["stores"][1]["bytes"] == 6
    assert counted["stores"][1]["prefixes"] == {"media": {"objects": 1, "bytes": 6}}


def test_residency_is_per_project_and_needs_a_role(router: httpx.Client, admin: Admin) -> None:
    mine = admin.project("us-west")
    stranger = Admin(router)
    theirs = stranger.project("us-west")
    read_key = admin.key(mine, ["read"])
    ingest_key = admin.key(mine, ["ingest"])
    for path in ("residency", "residency/audits"):
        # Another project's id, with a session or a key of mine: 404, never a hint.
        problem(router.request("GET" if path == "residency" else "POST", f"/v1/projects/{theirs['id']}/{path}",
                               headers=admin.h), 404)
        problem(router.request("GET" if path == "residency" else "POST", f"/v1/projects/{theirs['id']}/{path}",
                               headers=read_key["h"]), 404)
    problem(router.get(f"/v1/projects/{mine['id']}/residency", headers=ingest_key["h"]), 403)
    problem(router.post(f"/v1/projects/{mine['id']}/residency/audits", headers=read_key["h"]), 403)
    problem(router.get(f"/v1/projects/{mine['id']}/residency"), 401)
    bad = problem(router.post(f"/v1/projects/{mine['id']}/residency/audits", headers=admin.h,
                              json={"grace_seconds": -1}), 422)
    assert bad["errors"][0]["pointer"] == "/grace_seconds"
    bad = problem(router.post(f"/v1/projects/{mine['id']}/residency/audits", headers=admin.h,
                              json={"grace_seconds": "soon"}), 422)
    assert bad["errors"][0]["pointer"] == "/grace_seconds"
    problem(router.post(f"/v1/projects/{mine['id']}/residency/audits", headers={**admin.h,
            "Content-Type": "application/json"}, content=b'{"grace_seconds": '), 400)


def test_a_recorded_audit_is_signed_chained_and_shown_as_last_audit(router: httpx.Client, admin: Admin,
                                                                    topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    r = router.post(f"/v1/projects/{pid}/residency/audits", headers=admin.h)
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["scope"] == "project" and report["body"]["project_id"] == pid
    assert report["body"]["region"] == "us-west" and report["body"]["clean"] is True
    # Anyone can check it with the published key: hash and signature over {seq, prev_hash, body}.
    data = json.dumps({"body": report["body"], "prev_hash": report["prev_hash"], "seq": report["seq"]},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(data).hexdigest() == report["hash"]
    published = router.get(f"/v1/projects/{pid}/residency", headers=admin.h).json()
    assert published["public_key"] == report["public_key"]
    Ed25519PublicKey.from_public_bytes(base64.b64decode(published["public_key"])).verify(
        base64.b64decode(report["signature"]), data)
    last = published["last_audit"]
    assert {k: last[k] for k in ("seq", "hash", "prev_hash", "signature", "scope", "clean")} == {
        "seq": report["seq"], "hash": report["hash"], "prev_hash": report["prev_hash"],
        "signature": report["signature"], "scope": "project", "clean": True}
    assert last["body"] == report["body"]
    stored = sql(topo["cells"]["us-west"]["database_url"],
                 "SELECT seq, hash, audited_project FROM residency_reports WHERE seq = $1", report["seq"])
    assert stored[0]["hash"] == report["hash"] and str(stored[0]["audited_project"]) == pid
    entries = router.get(f"/v1/projects/{pid}/audit-logs", params={"action": "residency.audited"},
                         headers=admin.h).json()["data"]
    assert len(entries) == 1 and entries[0]["target_id"] == str(report["seq"])
    # Concurrent audits: each is its own link, and the chain never forks.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: router.post(f"/v1/projects/{pid}/residency/audits", headers=admin.h),
                             range(4)))
    assert [d.status_code for d in done] == [201] * 4
    reports = sorted((d.json() for d in done), key=lambda r: r["seq"])
    assert [r["seq"] for r in reports] == list(range(reports[0]["seq"], reports[0]["seq"] + 4))
    assert [r["prev_hash"] for r in reports[1:]] == [r["hash"] for r in reports[:-1]]


def _put(path: Path, data: bytes, *, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


# -- relay residency audit -------------------------------------------------------------------------------------


def test_the_cell_audit_finds_foreign_rows_and_stray_objects(stack: DevStack, router: httpx.Client, admin: Admin,
                                                             topo: dict[str, Any]) -> None:
    dsn = topo["cells"]["eu-west"]["database_url"]
    untouched = admin.project("eu-west")
    project = admin.project("eu-west")
    pid = project["id"]
    key = admin.key(project, ["ingest", "read"])
    _, media_id = _ingest(router, key)
    storage_key = sql(dsn, "SELECT storage_key FROM media WHERE id = $1", uuid.UUID(media_id))[0]["storage_key"]
    ghost, visitor = str(uuid.uuid4()), str(uuid.uuid4())  # no project row at all; a project homed in us-west
    ghost_row, ghost_user, visitor_row = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    root = _objects(topo, "eu-west")
    media_bytes = (root / storage_key).read_bytes()
    _execute(dsn,
             f"INSERT INTO projects (id, name, region, secret) VALUES ('{visitor}', 'v', 'us-west', '\\x00')",
             f"INSERT INTO interactions (id, project_id, type) VALUES ('{visitor_row}', '{visitor}', 'bug')",
             f"INSERT INTO interactions (id, project_id, type) VALUES ('{ghost_row}', '{ghost}', 'bug')",
             f"INSERT INTO end_users (id, project_id, external_user_id) VALUES ('{ghost_user}', '{ghost}', 'u')")
    stray = [_put(root / "stray" / "dump.bin", b"x" * 10),
             _put(root / "projects" / ghost / "media" / "lost", b"y" * 7),
             _put(root / "projects" / visitor / "media" / "hers", b"z" * 3)]
    orphan = _put(root / "projects" / pid / "media" / str(uuid.uuid4()), b"o" * 5, mtime=OLD)
    in_flight = _put(root / "projects" / pid / "media" / str(uuid.uuid4()), b"f" * 4)
    (root / storage_key).unlink()
    try:
        done = relay(stack, "audit", "--region", "eu-west", "--json")
        assert done.returncode == 1, done.stderr
        report = _json(done)
        body = report["body"]
        assert report["scope"] == "cell" and body["region"] == "eu-west" and body["clean"] is False
        foreign = {(f["table"], f["project_id"]): f for f in body["foreign_rows"]}
        assert foreign[("interactions", ghost)] == {"table": "interactions", "project_id": ghost, "rows": 1,
                                                    "reason": "no such project in this cell",
                                                    "sample_ids": [ghost_row]}
        assert foreign[("end_users", ghost)]["sample_ids"] == [ghost_user]
        assert foreign[("interactions", visitor)]["reason"] == "project homed in us-west"
        assert {"project_id": visitor, "region": "us-west"} in body["foreign_projects"]
        assert body["tables"]["interactions"]["foreign"] >= 2 and body["summary"]["foreign_rows"] >= 3
        objects = {f["key"]: f for f in body["foreign_objects"]}
        assert objects["stray/dump.bin"] == {"key": "stray/dump.bin", "bytes": 10, "reason": "outside projects/"}
        assert objects[f"projects/{ghost}/media/lost"]["reason"] == "no such project in this cell"
        assert objects[f"projects/{visitor}/media/hers"]["reason"] == "project homed in us-west"
        orphan_key = f"projects/{pid}/media/{orphan.name}"
        assert {"key": orphan_key, "bytes": 5, "project_id": pid} in body["orphan_objects"]
        assert not [o for o in body["orphan_objects"] if o["key"].endswith(in_flight.name)]  # younger than grace
        assert {"key": storage_key, "referenced_by": "media.storage_key", "project_id": pid} in body["missing_objects"]
        section = body["projects"][pid]
        assert section["clean"] is False and section["recent_objects"] == 1
        assert section["tables"]["media"] == 1 and section["objects"] == 2 and section["bytes"] == 9
        assert body["projects"][untouched["id"]]["clean"] is True
        assert ghost not in body["projects"] and visitor not in body["projects"]
        # The same findings for the project through the API, and its last audit is this cell report.
        seen = router.get(f"/v1/projects/{pid}/residency", headers=key["h"]).json()
        assert seen["clean"] is False
        assert seen["findings"]["orphan_objects"] == [{"key": orphan_key, "bytes": 5}]
        assert seen["findings"]["missing_objects"] == [{"key": storage_key, "referenced_by": "media.storage_key"}]
        assert seen["last_audit"]["seq"] == report["seq"] and seen["last_audit"]["scope"] == "cell"
        assert seen["last_audit"]["section"]["orphan_objects"] == section["orphan_objects"]
        assert "body" not in seen["last_audit"]  # a cell report names other projects
        # Without a grace period the upload in flight is an orphan too; the human summary names everything.
        text = relay(stack, "audit", "--region", "eu-west", "--grace", "0", "--no-record")
        assert text.returncode == 1
        assert "NOT clean" in text.stdout and f"project_id={ghost}" in text.stdout
        assert in_flight.name in text.stdout and "stray/dump.bin" in text.stdout
    finally:
        _execute(dsn, f"DELETE FROM interactions WHERE project_id IN ('{ghost}', '{visitor}')",
                 f"DELETE FROM end_users WHERE project_id = '{ghost}'", f"DELETE FROM projects WHERE id = '{visitor}'")
        for path in (*stray, orphan, in_flight):
            path.unlink()
        (root / storage_key).write_bytes(media_bytes)
    again = router.get(f"/v1/projects/{pid}/residency", headers=key["h"]).json()
    assert again["clean"] is True and again["stores"][1]["objects"] == 1


def test_audit_needs_the_cells_key_to_record(stack: DevStack, tmp_path: Path) -> None:
    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    (elsewhere / "topology.json").write_text((stack.state_dir / "topology.json").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    done = subprocess.run([sys.executable, "-m", "relay", "residency", "audit", "--region", "eu-west",
                           "--state-dir", str(elsewhere)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "cannot sign" in done.stderr
    done = relay(stack, "audit", "--region", "mars")
    assert done.returncode == 2 and "no region 'mars'" in done.stderr


# -- receipts --------------------------------------------------------------------------------------------------


def test_receipts_verify_and_name_the_first_broken_link(stack: DevStack, router: httpx.Client, admin: Admin,
                                                        topo: dict[str, Any], tmp_path: Path) -> None:
    dsn = topo["cells"]["us-west"]["database_url"]
    project = admin.project("us-west")
    assert relay(stack, "audit", "--region", "us-west").returncode in (0, 1)  # 1: other tests' leftovers
    assert router.post(f"/v1/projects/{project['id']}/residency/audits", headers=admin.h).status_code == 201
    assert relay(stack, "audit", "--region", "us-west").returncode in (0, 1)
    published = router.get(f"/v1/projects/{project['id']}/residency", headers=admin.h).json()

    verdict = _json(relay(stack, "verify", "--region", "us-west", "--json"))
    assert verdict["ok"] is True and verdict["reports"] >= 3 and verdict["first_seq"] == 1
    assert verdict["public_key"] == published["public_key"] and verdict["head_hash"] == published["head_hash"]
    assert relay(stack, "verify", "--region", "us-west", "--public-key", published["public_key"]).returncode == 0
    eu_key = router.get(f"/v1/projects/{admin.project('eu-west')['id']}/residency", headers=admin.h).json()
    assert eu_key["public_key"] != published["public_key"]  # one key per cell
    wrong = relay(stack, "verify", "--region", "us-west", "--public-key", eu_key["public_key"], "--json")
    assert wrong.returncode == 1 and _json(wrong)["broken_at"] == 1

    export = tmp_path / "chain.jsonl"
    assert relay(stack, "export", "--region", "us-west", "--out", str(export)).returncode == 0
    lines = export.read_text().splitlines()
    assert len(lines) == verdict["reports"]
    assert _json(relay(stack, "verify", "--file", str(export), "--json"))["head_hash"] == verdict["head_hash"]
    assert relay(stack, "verify", "--file", "-", stdin=export.read_text()).returncode == 0

    k = len(lines) - 2  # a report in the middle (seq k + 1)
    altered = json.loads(lines[k])
    altered["body"]["clean"] = not altered["body"]["clean"]
    (tmp_path / "altered.jsonl").write_text("\n".join([*lines[:k], json.dumps(altered), *lines[k + 1:]]) + "\n")
    done = relay(stack, "verify", "--file", str(tmp_path / "altered.jsonl"))
    assert done.returncode == 1
    assert f"BROKEN at report {k + 1} (line {k + 1}): altered" in done.stdout
    assert f"intact up to report {k}" in done.stdout

    (tmp_path / "dropped.jsonl").write_text("\n".join([*lines[:k], *lines[k + 1:]]) + "\n")
    broken = _json(relay(stack, "verify", "--file", str(tmp_path / "dropped.jsonl"), "--json"))
    assert broken["ok"] is False and broken["broken_at"] == k + 2 and f"report {k + 1} missing" in broken["reason"]

    # The table refuses changes; a superuser can force one, and verification then finds it in the database.
    try:
        sql(dsn, "DELETE FROM residency_reports WHERE seq = 1")
        raise AssertionError("the delete went through")
    except asyncpg.RaiseError as exc:
        assert "append-only" in str(exc)
    original = sql(dsn, "SELECT body::text AS body FROM residency_reports WHERE seq = $1", k + 1)[0]["body"]
    _execute(dsn, f"""UPDATE residency_reports SET body = jsonb_set(body, '{{region}}', '"eu-west"')
                       WHERE seq = {k + 1}""")
    try:
        tampered = _json(relay(stack, "verify", "--region", "us-west", "--json"))
        assert tampered["ok"] is False and tampered["broken_at"] == k + 1 and tampered["last_seq"] == k
    finally:
        _execute(dsn, (f"UPDATE residency_reports SET body = $1::jsonb WHERE seq = {k + 1}", original))
    assert relay(stack, "verify", "--region", "us-west").returncode == 0


# -- canaries --------------------------------------------------------------------------------------------------


def _where(result: dict[str, Any], store: str) -> dict[str, list[str]]:
    """slot → where its marker was found, in one store of a scan."""
    found: dict[str, list[str]] = {}
    for s in result["stores"]:
        if s["store"] == store:
            for hit in s["hits"]:
                found.setdefault(hit["slot"], []).append(hit["where"])
    return found


def test_canaries_planted_in_eu_west_stay_there(stack: DevStack, router: httpx.Client, admin: Admin,
                                                topo: dict[str, Any], tmp_path: Path) -> None:
    # us-west holds data of its own, so its scan has something to look through.
    neighbour = admin.project("us-west")
    neighbour_key = admin.key(neighbour, ["ingest"])
    _ingest(router, neighbour_key)
    project = admin.project("eu-west")
    pid = project["id"]
    canaries = tmp_path / "canaries.jsonl"
    done = relay(stack, "canary", "plant", "--project", pid, "--token", admin.token, "--out", str(canaries),
                 "--json")
    assert done.returncode == 0, done.stderr
    planted = _json(done)
    assert planted["project_id"] == pid and planted["region"] == "eu-west" and len(planted["markers"]) == 20
    assert json.loads(canaries.read_text()) == planted
    # The ingest key it created for itself was revoked again.
    keys = router.get(f"/v1/projects/{pid}/api-keys", headers=admin.h).json()["data"]
    assert [k["revoked_at"] is not None for k in keys if k["name"] == "residency canary"] == [True]

    # us-west and the router: nothing, though every table, object and Redis key was read.
    elsewhere = relay(stack, "canary", "scan", "--canaries", str(canaries), "--region", "us-west", "--json")
    assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr
    result = _json(elsewhere)
    assert [s["store"] for s in result["stores"]] == ["us-west database", "us-west object storage", "us-west redis",
                                                      "router database", "router redis"]
    assert all(s["hits"] == [] for s in result["stores"]) and result["breaches"] == []
    scanned = {s["store"]: s["scanned"] for s in result["stores"]}
    assert scanned["us-west database"]["tables"] >= 20 and scanned["us-west database"]["rows"] > 0
    assert scanned["us-west object storage"]["objects"] >= 1 and scanned["router database"]["rows"] > 0
    assert result["control"] == {"checked": False, "missing": []} and result["ok"] is True

    # eu-west: every marker, where the API put it (object bytes and gzip included).
    home = relay(stack, "canary", "scan", "--canaries", str(canaries), "--region", "eu-west", "--no-router",
                 "--json")
    assert home.returncode == 0, home.stdout + home.stderr
    result = _json(home)
    assert result["control"] == {"checked": True, "missing": []} and result["breaches"] == []
    assert result["plants"] == [{"project_id": pid, "home": "eu-west", "markers": 20}]
    db = _where(result, "eu-west database")
    assert any(w.startswith("end_users.email") for w in db["email"])
    assert any(w.startswith("end_users.traits") for w in db["trait"])
    assert any(w.startswith("sessions.user_agent") for w in db["agent"])
    assert any(w.startswith("interactions.content_text") for w in db["text"])
    assert any(w.startswith("interaction_logs.console") for w in db["console"])
    assert any(w.startswith("interaction_logs.network") for w in db["network"])
    assert any(w.startswith("messages.body") for w in db["chat"]) and "reply" in db
    assert any(w.startswith("feedback_items.title") for w in db["feedback"])
    objects = _where(result, "eu-west object storage")
    assert objects["media"] == [f"projects/{pid}/media/{planted['ids']['media']}"]
    assert any(w.endswith(".json.gz (gunzipped)") and f"projects/{pid}/replays/" in w for w in objects["replay"])
    # Every object the plant made is accounted for by a row (media.storage_key, the replay's chunk index).
    audited = router.get(f"/v1/projects/{pid}/residency", headers=admin.h).json()
    assert audited["clean"] is True and audited["findings"]["recent_objects"] == 0
    assert set(audited["stores"][1]["prefixes"]) == {"media", "replays"}
    tables = audited["stores"][0]["tables"]
    assert tables["messages"] == 2 and tables["replays"] == 1 and tables["interaction_logs"] == 1

    # A marker copied into us-west — sent to the wrong region, and a gzip object — is a breach, named by place.
    leak = router.post("/v1/ingest/interactions", headers=neighbour_key["h"],
                       json={"type": "bug", "content": {"text": planted["markers"]["text"]}})
    assert leak.status_code == 201
    stray = _put(_objects(topo, "us-west") / "projects" / neighbour["id"] / "exports" / "leak.json.gz",
                 gzip.compress(json.dumps({"email": planted["markers"]["email"] + "@example.com"}).encode()))
    try:
        breach = relay(stack, "canary", "scan", "--canaries", str(canaries))
        assert breach.returncode == 1, breach.stdout + breach.stderr
        assert "control: every marker found at home" in breach.stdout
        assert (f"BREACH: text marker of project {pid} in us-west database: "
                f"interactions.content_text id={leak.json()['id']}") in breach.stdout
        assert (f"BREACH: email marker of project {pid} in us-west object storage: "
                f"projects/{neighbour['id']}/exports/leak.json.gz (gunzipped)") in breach.stdout
        assert "router database: 0 hits" in breach.stdout and " BREACHES" in breach.stdout
    finally:
        stray.unlink()
    # Each scan that read the project's home is recorded there, for the residency page (the us-west-only scan,
    # which could not check home, is not): the stores read, the breaches by place, and never a marker.
    recorded = sql(topo["cells"]["eu-west"]["database_url"],
                   """SELECT ok, markers, found_home, missing_slots, stores, breaches, t::text AS whole
                        FROM canary_results t WHERE project_id = $1 ORDER BY scanned_at""", uuid.UUID(pid))
    assert [(r["ok"], r["markers"], r["found_home"], r["missing_slots"]) for r in recorded] == [
        (True, 20, 20, []), (False, 20, 20, [])]
    breaches = [(b["store"], b["slot"], b["where"]) for b in json.loads(recorded[1]["breaches"])]
    assert ("us-west database", "text", f"interactions.content_text id={leak.json()['id']}") in breaches
    assert ("us-west object storage", "email",
            f"projects/{neighbour['id']}/exports/leak.json.gz (gunzipped)") in breaches
    assert len(breaches) == breach.stdout.count("BREACH: ")  # every one the scan printed (the workers' copies too)
    stores = {s["store"]: s["hits"] for s in json.loads(recorded[1]["stores"])}
    assert stores["us-west database"] >= 1 and stores["router database"] == 0 and stores["eu-west database"] > 0
    assert not any(m in r["whole"] for r in recorded for m in planted["markers"].values())


def test_plant_with_a_given_key_and_a_failing_control(stack: DevStack, admin: Admin, tmp_path: Path) -> None:
    """Plant with a key of one's own; a scanner that cannot find what is surely there proves nothing by finding
    nothing elsewhere."""
    us = admin.project("us-west")
    key = admin.key(us, ["ingest"])
    planted = relay(stack, "canary", "plant", "--project", us["id"], "--key", key["key"],
                    "--out", str(tmp_path / "us.jsonl"), "--json")
    assert planted.returncode == 0, planted.stderr
    assert _json(planted)["region"] == "us-west"
    home = relay(stack, "canary", "scan", "--canaries", str(tmp_path / "us.jsonl"), "--region", "us-west",
                 "--no-router", "--no-redis")
    assert home.returncode == 0 and "control: every marker found at home" in home.stdout, home.stdout
    project = admin.project("eu-west")
    wrong = relay(stack, "canary", "plant", "--project", project["id"], "--key", key["key"],
                  "--out", str(tmp_path / "wrong.jsonl"))
    assert wrong.returncode == 2 and "belongs to another project" in wrong.stderr
    assert not (tmp_path / "wrong.jsonl").exists()
    made_up = {"project_id": project["id"], "region": "eu-west", "markers": {"text": "relaycanarynowherezzzz"}}
    canaries = tmp_path / "canaries.jsonl"
    canaries.write_text(json.dumps(made_up) + "\n")
    done = relay(stack, "canary", "scan", "--canaries", str(canaries), "--region", "eu-west", "--no-router")
    assert done.returncode == 3 and "CONTROL FAILED: not found at home: text" in done.stdout
    missing = relay(stack, "canary", "scan", "--canaries", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and "no canaries planted" in missing.stderr
    bad = relay(stack, "canary", "plant", "--project", project["id"], "--out", str(canaries))
    assert bad.returncode == 2 and "needs --key" in bad.stderr
