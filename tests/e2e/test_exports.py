"""Exports through the router: the end-user export carries the person's replay recordings and media bytes,
and a project export is the whole project as one zip in its region's object store, with a signed manifest
that an auditor verifies with nothing but the region's published key."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import msgspec
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image

from common.ids import uuid7
from tests.conftest import Admin, problem, sql, until

CARD = "4111 1111 1111 1111"
T0 = 1_760_000_000_000


def _root(topo: dict[str, Any], region: str) -> Path:
    return Path(urlparse(topo["cells"][region]["object_store"]).path)


def _gps_png() -> bytes:
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(out, "PNG", exif=exif)
    return out.getvalue()


def _person(router: httpx.Client, ingest: dict[str, Any], external_id: str) -> dict[str, Any]:
    """A person with a session, a bug report with a screenshot, and a two-chunk replay of the session."""
    session = router.post("/v1/ingest/sessions", headers=ingest["h"],
                          json={"user": {"external_id": external_id}}).json()
    iid = router.post("/v1/ingest/interactions", headers=ingest["h"], json={
        "type": "bug", "session_id": session["id"], "user": {"external_id": external_id},
        "content": {"text": f"broken for {external_id}"}}).json()["id"]
    media = router.post(f"/v1/ingest/interactions/{iid}/media", params={"kind": "screenshot"}, content=_gps_png(),
                        headers={**ingest["h"], "Content-Type": "image/png"})
    assert media.status_code == 201, media.text
    replay_id = str(uuid7())
    for index in range(2):
        events = [{"type": 3, "timestamp": T0 + 100 * index + i,
                   "data": {"source": 5, "id": 9, "text": f"{external_id} {index}.{i} paid with {CARD}"}}
                  for i in range(3)]
        r = router.post(f"/v1/ingest/replays/{replay_id}/chunks/{index}", params={"session_id": session["id"]},
                        content=msgspec.json.encode(events),
                        headers={**ingest["h"], "Content-Type": "application/json"})
        assert r.status_code == 201, r.text
    users = router.get(f"/v1/projects/{ingest['project_id']}/end-users", params={"q": external_id},
                       headers=ingest["admin_h"]).json()["data"]
    return {"user_id": users[0]["id"], "interaction_id": iid, "media": media.json(), "replay_id": replay_id}


def test_end_user_export_holds_replay_and_media_bytes(router: httpx.Client, admin: Admin,
                                                      topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    ingest = {**admin.key(project, ["ingest"]), "project_id": pid, "admin_h": admin.h}
    me, other = _person(router, ingest, "exported-person"), _person(router, ingest, "someone-else")
    r = router.get(f"/v1/projects/{pid}/end-users/{me['user_id']}/export", headers=admin.h)
    assert r.status_code == 200, r.text
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    names = sorted(archive.namelist())
    media_name = f"media/{me['interaction_id']}/{me['media']['id']}.png"
    chunks = [f"replays/{me['replay_id']}/chunks/{i:06d}.json.gz" for i in range(2)]
    assert names == sorted([media_name, "person.json", *chunks])
    # The media bytes are those stored in the region (metadata already gone); the replay chunks too.
    root = _root(topo, "eu-west")
    [row] = sql(topo["cells"]["eu-west"]["database_url"], "SELECT storage_key FROM media WHERE id = $1",
                uuid.UUID(me["media"]["id"]))
    assert archive.read(media_name) == (root / row["storage_key"]).read_bytes()
    assert hashlib.sha256(archive.read(media_name)).hexdigest() == me["media"]["sha256"]
    assert not Image.open(io.BytesIO(archive.read(media_name))).getexif()
    for i, name in enumerate(chunks):
        assert archive.read(name) == (root / "projects" / pid / name).read_bytes()
        events = msgspec.json.decode(gzip.decompress(archive.read(name)))
        assert [e["data"]["text"] for e in events] == [
            f"exported-person {i}.{n} paid with [redacted:card]" for n in range(3)]
    doc = json.loads(archive.read("person.json"))
    [replay] = doc["replays"]
    assert replay["id"] == me["replay_id"] and replay["files"] == chunks
    assert doc["interactions"][0]["media"][0]["file"] == media_name
    for name in names:
        assert b"someone-else" not in archive.read(name) and other["replay_id"].encode() not in archive.read(name)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _verify(manifest: dict[str, Any], public_key: str) -> None:
    """What an auditor does: hash and signature over the canonical body, with the region's published key."""
    data = _canonical(manifest["body"])
    assert hashlib.sha256(data).hexdigest() == manifest["hash"]
    assert manifest["public_key"] == public_key
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key)).verify(
        base64.b64decode(manifest["signature"]), data)


def test_project_export_zip_verifies(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = {**admin.key(project, ["ingest"]), "project_id": pid, "admin_h": admin.h}
    person = _person(router, ingest, "exported-project-person")
    webhook = router.post(f"/v1/projects/{pid}/webhooks", headers=admin.h,
                          json={"url": "http://127.0.0.1:9/hook", "events": ["interaction.created"]})
    assert webhook.status_code == 201, webhook.text
    whsec = webhook.json()["secret"]

    # Only the owner: a project admin, an admin key and another account are refused.
    url = f"/v1/projects/{pid}/export"
    problem(router.post(url, headers=admin.member(project, "admin").h), 403)
    problem(router.post(url, headers=admin.key(project, ["admin"])["h"]), 403)
    problem(router.post(url, headers=Admin(router).h), 404)

    r = router.post(url, headers=admin.h)
    assert r.status_code == 202, r.text
    export = r.json()
    assert export["status"] in ("pending", "running", "ready") and export["project_id"] == pid
    assert r.headers["location"] == export["links"]["self"] == f"/v1/projects/{pid}/exports/{export['id']}"
    done = until(lambda: (e := router.get(export["links"]["self"], headers=admin.h).json())["status"] == "ready"
                 and e, 60, "the export is ready")
    assert done["links"]["content"] and done["links"]["manifest"] and done["failure_reason"] is None
    listed = router.get(f"/v1/projects/{pid}/exports", headers=admin.h).json()["data"]
    assert [e["id"] for e in listed] == [export["id"]]

    content = router.get(done["links"]["content"], headers=admin.h)
    assert content.status_code == 200 and content.headers["content-type"] == "application/zip"
    assert len(content.content) == done["size_bytes"] and hashlib.sha256(content.content).hexdigest() == done["sha256"]
    # The archive lives in the project's region, under its exports prefix, and nowhere else.
    stored = [p for p in (_root(topo, "us-west") / "projects" / pid / "exports" / export["id"]).iterdir()]
    assert sorted(p.name for p in stored) == sorted([f"project-{pid}.zip", "manifest.json"])
    assert (_root(topo, "us-west") / "projects" / pid / "exports" / export["id"] / f"project-{pid}.zip"
            ).read_bytes() == content.content
    assert not (_root(topo, "eu-west") / "projects" / pid).exists()

    # The manifest verifies with the key the region publishes, and accounts for every file of the archive.
    archive = zipfile.ZipFile(io.BytesIO(content.content))
    assert archive.testzip() is None
    manifest = json.loads(archive.read("manifest.json"))
    public_key = router.get(f"/v1/projects/{pid}/residency", headers=admin.h).json()["public_key"]
    _verify(manifest, public_key)
    assert router.get(done["links"]["manifest"], headers=admin.h).json() == manifest
    assert manifest["hash"] == done["manifest_hash"] and manifest["signature"] == done["signature"]
    body = manifest["body"]
    assert (body["project_id"], body["export_id"], body["region"]) == (pid, export["id"], "us-west")
    listed_files = {t["file"]: t for t in body["tables"]} | {o["file"]: o for o in body["objects"]}
    assert sorted(listed_files) == sorted(n for n in archive.namelist() if n != "manifest.json")
    for name, entry in listed_files.items():
        data = archive.read(name)
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], name
    # Altering the body breaks the hash and the signature.
    forged = _canonical({**body, "region": "eu-west"})
    assert hashlib.sha256(forged).hexdigest() != manifest["hash"]
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key)).verify(
            base64.b64decode(manifest["signature"]), forged)

    # Every row of the project, and every object, bytes as stored; credentials withheld.
    tables = {t["table"]: t for t in body["tables"]}
    rows = {name: [json.loads(line) for line in archive.read(t["file"]).splitlines()] for name, t in tables.items()}
    assert [r["id"] for r in rows["projects"]] == [pid]
    assert not {"secret", "sealed_secret", "identity_secret"} & set(rows["projects"][0])
    assert {r["id"] for r in rows["interactions"]} >= {person["interaction_id"]}
    assert all("key_hash" not in k and "key_digest" not in k for k in rows["api_keys"]) and len(rows["api_keys"]) == 2
    assert all("secret" not in w for w in rows["webhooks"]) and whsec.encode() not in content.content
    assert [r["id"] for r in rows["replays"]] == [person["replay_id"]]
    assert tables["projects"]["withheld"] == ["secret", "sealed_secret", "identity_secret"]
    db = topo["cells"]["us-west"]["database_url"]
    for name in ("interactions", "sessions", "end_users", "media", "privacy_rules", "replays"):
        [count] = sql(db, f"SELECT count(*) FROM {name} WHERE project_id = $1", uuid.UUID(pid))
        assert tables[name]["rows"] == count[0] == len(rows[name]), name
    keys = sorted(o["key"] for o in body["objects"])
    [media_row] = sql(db, "SELECT storage_key FROM media WHERE id = $1", uuid.UUID(person["media"]["id"]))
    chunk_keys = [f"projects/{pid}/replays/{person['replay_id']}/chunks/{i:06d}.json.gz" for i in range(2)]
    assert keys == sorted([media_row["storage_key"], *chunk_keys])
    for o in body["objects"]:
        assert archive.read(o["file"]) == (_root(topo, "us-west") / o["key"]).read_bytes()

    # The export's objects are accounted for by its row: the residency audit finds no orphan.
    residency = router.get(f"/v1/projects/{pid}/residency", headers=admin.h).json()
    assert residency["findings"]["orphan_objects"] == []
    audit = [e["action"] for e in router.get(f"/v1/projects/{pid}/audit-logs", headers=admin.h).json()["data"]]
    assert "project.export_requested" in audit and "project.export_downloaded" in audit
    problem(router.get(f"/v1/projects/{pid}/exports/{uuid7()}", headers=admin.h), 404)


def _ready_export(router: httpx.Client, admin: Admin, pid: str) -> dict[str, Any]:
    r = router.post(f"/v1/projects/{pid}/export", headers=admin.h)
    assert r.status_code == 202, r.text
    url = r.json()["links"]["self"]
    found: dict[str, Any] = until(lambda: (e := router.get(url, headers=admin.h).json())["status"] == "ready" and e,
                                  60, "the export is ready")
    return found


def test_an_end_users_erasure_withdraws_the_exports_that_may_hold_them(router: httpx.Client, admin: Admin,
                                                                       topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    ingest = {**admin.key(project, ["ingest"]), "project_id": pid, "admin_h": admin.h}
    person = _person(router, ingest, "erased-after-export")
    before = _ready_export(router, admin, pid)
    archive = zipfile.ZipFile(io.BytesIO(router.get(before["links"]["content"], headers=admin.h).content))
    assert b"erased-after-export" in archive.read("tables/end_users.jsonl")
    kept = _root(topo, "eu-west") / "projects" / pid / "exports" / before["id"]
    assert sorted(p.name for p in kept.iterdir()) == sorted([f"project-{pid}.zip", "manifest.json"])

    r = router.delete(f"/v1/projects/{pid}/end-users/{person['user_id']}", headers=admin.h)
    assert r.status_code == 204, r.text
    # The archive that held the person is gone from the region's store, and the export says why.
    withdrawn = router.get(before["links"]["self"], headers=admin.h).json()
    assert withdrawn["status"] == "failed" and withdrawn["failure_reason"].startswith("withdrawn: an end user")
    assert "content" not in withdrawn["links"] and "manifest" not in withdrawn["links"]
    problem(router.get(before["links"]["content"], headers=admin.h), 409)
    problem(router.get(before["links"]["manifest"], headers=admin.h), 409)
    assert not kept.exists() or not any(kept.iterdir())
    [erased] = router.get(f"/v1/projects/{pid}/audit-logs", params={"action": "end_user.erased"},
                          headers=admin.h).json()["data"]
    assert erased["meta"]["exports_withdrawn"] == 1
    # A new export holds the project without the person.
    after = _ready_export(router, admin, pid)
    content = router.get(after["links"]["content"], headers=admin.h).content
    fresh = zipfile.ZipFile(io.BytesIO(content))
    assert all(b"erased-after-export" not in fresh.read(name) for name in fresh.namelist())
    exports = _root(topo, "eu-west") / "projects" / pid / "exports"
    assert [p.relative_to(exports).parts[0] for p in exports.rglob("*") if p.is_file()] == [after["id"]] * 2
