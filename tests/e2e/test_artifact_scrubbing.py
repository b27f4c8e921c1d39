"""Everything stored is scrubbed, read back from the stores themselves: replay events through the project's
privacy rules, images without their EXIF/XMP/IPTC (unless the project keeps them), traits and user agents;
and media uploads with a client id stored once however often they are retried."""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import io
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import msgspec
from PIL import Image

from common.ids import uuid7
from tests.conftest import Admin, problem, sql

CARD = "4111 1111 1111 1111"  # passes Luhn: the default `card` rule redacts it
CARD_DIGITS = CARD.replace(" ", "")
SERIAL = "SN-CANARY-7731"
T0 = 1_760_000_000_000


def _db(topo: dict[str, Any], region: str) -> str:
    return str(topo["cells"][region]["database_url"])


def _root(topo: dict[str, Any], region: str) -> Path:
    return Path(urlparse(topo["cells"][region]["object_store"]).path)


def _json(value: Any) -> Any:
    """A jsonb value as a plain connection returns it (text), decoded."""
    return None if value is None else msgspec.json.decode(value)


def _rules(router: httpx.Client, admin: Admin, project: dict[str, Any]) -> dict[str, str]:
    """The project's rule ids by name (the default rules: credentials, card, bearer)."""
    rows = router.get(f"/v1/projects/{project['id']}/privacy-rules", headers=admin.h).json()["data"]
    return {r["name"]: r["id"] for r in rows}


def _replay_events() -> list[dict[str, Any]]:
    """A full snapshot with a card in a text node and an attribute and a password field holding a value,
    then a mutation and input events typing the card and the password."""
    page = {"type": 0, "id": 1, "childNodes": [{"type": 2, "id": 2, "tagName": "html", "attributes": {},
            "childNodes": [{"type": 2, "id": 3, "tagName": "body", "attributes": {}, "childNodes": [
                {"type": 2, "id": 4, "tagName": "p", "attributes": {"title": f"card {CARD}"},
                 "childNodes": [{"type": 3, "id": 5, "textContent": f"Paying with {CARD} today"}]},
                {"type": 2, "id": 6, "tagName": "input",
                 "attributes": {"type": "password", "name": "pw", "value": "hunter2-secret"}, "childNodes": []},
                {"type": 2, "id": 7, "tagName": "input", "attributes": {"type": "text", "name": "note"},
                 "childNodes": []}]}]}]}
    return [
        {"type": 4, "timestamp": T0, "data": {"href": "https://shop.example/pay?token=abc123secret", "width": 800,
                                              "height": 600}},
        {"type": 2, "timestamp": T0 + 1, "data": {"node": page, "initialOffset": {"left": 0, "top": 0}}},
        {"type": 3, "timestamp": T0 + 2, "data": {"source": 0, "texts": [{"id": 5, "value": f"now {CARD_DIGITS}"}],
                                                  "attributes": [{"id": 4, "attributes": {"data-x": CARD}}],
                                                  "removes": [], "adds": [{"parentId": 3, "nextId": None, "node": {
                                                      "type": 3, "id": 8, "textContent": f"added {CARD}"}}]}},
        {"type": 3, "timestamp": T0 + 3, "data": {"source": 5, "id": 7, "text": CARD, "isChecked": False}},
        {"type": 3, "timestamp": T0 + 4, "data": {"source": 5, "id": 6, "text": "hunter3-typed", "isChecked": False}},
        {"type": 3, "timestamp": T0 + 5, "data": {"source": 5, "id": 6, "text": "*******", "isChecked": False}},
        {"type": 3, "timestamp": T0 + 6, "data": {"source": 1, "positions": [{"x": 1, "y": 2, "id": 4,
                                                                               "timeOffset": 0}]}},
    ]


def test_replay_events_are_scrubbed_before_they_are_stored(router: httpx.Client, admin: Admin,
                                                            topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    ingest, read = admin.key(project, ["ingest"]), admin.key(project, ["read"])
    rules = _rules(router, admin, project)
    replay_id, session_id = uuid7(), uuid7()
    body = gzip.compress(msgspec.json.encode(_replay_events()))
    r = router.post(f"/v1/ingest/replays/{replay_id}/chunks/0", params={"session_id": str(session_id)}, content=body,
                    headers={**ingest["h"], "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 201, r.text

    # The object in the region's store holds no card, no password, no token; the structure is intact.
    [path] = [p for p in (_root(topo, "eu-west") / "projects" / pid).rglob("*") if p.is_file()]
    raw = gzip.decompress(path.read_bytes()).decode()
    for secret in (CARD, CARD_DIGITS, "hunter2-secret", "hunter3-typed", "abc123secret"):
        assert secret not in raw, secret
    stored = msgspec.json.decode(raw)
    assert len(stored) == 7 and [e["timestamp"] for e in stored] == [T0 + i for i in range(7)]
    body_node = stored[1]["data"]["node"]["childNodes"][0]["childNodes"][0]
    paragraph, password, note = body_node["childNodes"]
    assert paragraph["childNodes"][0]["textContent"] == "Paying with [redacted:card] today"
    assert paragraph["attributes"]["title"] == "card [redacted:card]"
    assert password["attributes"]["value"] == "[redacted:credentials]" and password["attributes"]["name"] == "pw"
    assert note["attributes"] == {"type": "text", "name": "note"}
    mutation = stored[2]["data"]
    assert mutation["texts"] == [{"id": 5, "value": "now [redacted:card]"}]
    assert mutation["attributes"] == [{"id": 4, "attributes": {"data-x": "[redacted:card]"}}]
    assert mutation["adds"][0]["node"]["textContent"] == "added [redacted:card]"
    assert stored[3]["data"]["text"] == "[redacted:card]"
    assert stored[4]["data"]["text"] == "[redacted:credentials]"  # typed into the password field
    assert stored[5]["data"]["text"] == "*******"  # rrweb's own mask is left alone, and not counted
    assert stored[6] == _replay_events()[6]
    assert "token=[redacted:credentials]" in stored[0]["data"]["href"]

    # The redaction record says what was found, per rule and scope: counts, never values.
    [row] = sql(_db(topo, "eu-west"), "SELECT privacy_scope FROM replays WHERE id = $1", replay_id)
    record = _json(row["privacy_scope"])
    assert record["redactions"][rules["card"]] == {"rule": "card", "matches": 6, "scopes": {"content": 6}}
    assert record["redactions"][rules["credentials"]] == {"rule": "credentials", "matches": 3,
                                                           "scopes": {"content": 3}}
    assert record["total"] == 9 and "hunter" not in str(record) and "4111" not in str(record)
    # A second chunk adds to the record; the API shows it and the events come back scrubbed.
    more = [{"type": 3, "timestamp": T0 + 10, "data": {"source": 5, "id": 7, "text": f"x {CARD}"}}]
    r = router.post(f"/v1/ingest/replays/{replay_id}/chunks/1", params={"session_id": str(session_id)},
                    content=msgspec.json.encode(more), headers={**ingest["h"], "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    got = router.get(f"/v1/projects/{pid}/replays/{replay_id}", headers=read["h"]).json()
    assert got["privacy_scope"]["redactions"][rules["card"]]["matches"] == 7 and got["privacy_scope"]["total"] == 10
    events = router.get(f"/v1/projects/{pid}/replays/{replay_id}/events", headers=read["h"])
    assert events.status_code == 200 and "4111" not in events.text and "hunter" not in events.text

    # With the card rule disabled, cards are kept (the project's rules decide), and nothing is counted for it.
    assert router.patch(f"/v1/projects/{pid}/privacy-rules/{rules['card']}", json={"enabled": False},
                        headers=admin.h).status_code == 200
    other = uuid7()
    r = router.post(f"/v1/ingest/replays/{other}/chunks/0", params={"session_id": str(session_id)},
                    content=msgspec.json.encode(more), headers={**ingest["h"], "Content-Type": "application/json"})
    assert r.status_code == 201
    [row] = sql(_db(topo, "eu-west"), "SELECT privacy_scope FROM replays WHERE id = $1", other)
    assert _json(row["privacy_scope"]) is None


def _image(fmt: str) -> bytes:
    """A real image with GPS coordinates, a camera serial number and a maker in its EXIF (JPEG also XMP and
    a comment, PNG a text chunk)."""
    exif = Image.Exif()
    exif[0x010F] = "CanaryMaker"
    exif[0x8825] = {1: "N", 2: (37.0, 46.0, 29.7), 3: "W", 4: (122.0, 25.0, 9.8)}
    exif.get_ifd(0x8769)[0xA431] = SERIAL
    picture = Image.new("RGB", (64, 48), (30, 120, 200))
    out = io.BytesIO()
    if fmt == "JPEG":
        xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>{SERIAL}-xmp</rdf:RDF></x:xmpmeta>'.encode()
        picture.save(out, "JPEG", exif=exif, xmp=xmp, comment=f"{SERIAL}-comment", quality=90)
    else:
        from PIL.PngImagePlugin import PngInfo
        text = PngInfo()
        text.add_text("Author", f"{SERIAL}-author")
        picture.save(out, "PNG", exif=exif, pnginfo=text)
    data = out.getvalue()
    assert SERIAL.encode() in data and b"CanaryMaker" in data
    return data


def _upload(router: httpx.Client, key: dict[str, Any], iid: str, data: bytes, content_type: str,
            **params: str) -> httpx.Response:
    return router.post(f"/v1/ingest/interactions/{iid}/media", params={"kind": "screenshot", **params}, content=data,
                       headers={**key["h"], "Content-Type": content_type})


def _interaction(router: httpx.Client, key: dict[str, Any]) -> str:
    r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": {"text": "look"}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_images_lose_their_metadata_unless_the_project_keeps_it(router: httpx.Client, admin: Admin,
                                                                 topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest, read = admin.key(project, ["ingest"]), admin.key(project, ["read"])
    iid = _interaction(router, ingest)
    for fmt, content_type in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        sent = _image(fmt)
        r = _upload(router, ingest, iid, sent, content_type)
        assert r.status_code == 201, r.text
        media = r.json()
        assert {"exif", "gps", "serial_number"} <= set(media["metadata_removed"])
        assert ("xmp" in media["metadata_removed"] and "comment" in media["metadata_removed"]) if fmt == "JPEG" \
            else "text" in media["metadata_removed"]
        # The object store holds the picture without any of it: read the file itself.
        [row] = sql(_db(topo, "us-west"), "SELECT storage_key, sha256, size_bytes, meta FROM media WHERE id = $1",
                    uuid.UUID(media["id"]))
        kept = (_root(topo, "us-west") / row["storage_key"]).read_bytes()
        for canary in (SERIAL.encode(), b"CanaryMaker", b"Exif\x00\x00", b"GPS"):
            assert canary not in kept, canary
        picture = Image.open(io.BytesIO(kept))
        assert picture.format == fmt and picture.size == (64, 48) and not picture.getexif()
        assert picture.getpixel((10, 10))[2] > 150  # the same picture (JPEG within its own quality)
        assert row["sha256"] == hashlib.sha256(kept).hexdigest() == media["sha256"]
        assert row["size_bytes"] == len(kept) == media["size_bytes"] < len(sent)
        assert SERIAL not in row["meta"] and _json(row["meta"])["metadata_removed"] == media["metadata_removed"]
        served = router.get(f"/v1/projects/{pid}/media/{media['id']}/content", headers=read["h"])
        assert served.status_code == 200 and served.content == kept

    # The project turns stripping off: images are then stored byte for byte as sent.
    url = f"/v1/projects/{pid}/settings"
    assert router.get(url, headers=admin.h).json()["strip_image_metadata"] is True
    r = router.patch(url, json={"strip_image_metadata": False}, headers=admin.h)
    assert r.status_code == 200 and r.json()["strip_image_metadata"] is False, r.text
    sent = _image("PNG")
    media = _upload(router, ingest, iid, sent, "image/png").json()
    assert media["metadata_removed"] == [] and media["sha256"] == hashlib.sha256(sent).hexdigest()
    [row] = sql(_db(topo, "us-west"), "SELECT storage_key FROM media WHERE id = $1", uuid.UUID(media["id"]))
    assert (_root(topo, "us-west") / row["storage_key"]).read_bytes() == sent
    entries = router.get(f"/v1/projects/{pid}/audit-logs", headers=admin.h).json()["data"]
    assert {"strip_image_metadata": False} in [e["meta"] for e in entries if e["action"] == "project.settings_updated"]


def test_a_retried_upload_is_stored_once(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    iid = _interaction(router, ingest)
    media_id = str(uuid7())
    sent = _image("JPEG")
    first = _upload(router, ingest, iid, sent, "image/jpeg", id=media_id)
    assert first.status_code == 201 and first.json()["id"] == media_id, first.text
    # Retried, also several at once: 200 with the stored media, nothing new in the database or the store.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        retries = list(pool.map(lambda _: _upload(router, ingest, iid, sent, "image/jpeg", id=media_id), range(4)))
    for retry in retries:
        assert retry.status_code == 200 and retry.json() == first.json(), retry.text
    rows = sql(_db(topo, "eu-west"), "SELECT id, storage_key FROM media WHERE project_id = $1", uuid.UUID(pid))
    assert [str(r["id"]) for r in rows] == [media_id]
    files = [p for p in (_root(topo, "eu-west") / "projects" / pid / "media").rglob("*") if p.is_file()]
    assert [f.relative_to(_root(topo, "eu-west")).as_posix() for f in files] == [rows[0]["storage_key"]]

    # Another body, kind or interaction under the same id: 409, nothing stored.
    problem(_upload(router, ingest, iid, _image("PNG"), "image/png", id=media_id), 409)
    other = _interaction(router, ingest)
    problem(_upload(router, ingest, other, sent, "image/jpeg", id=media_id), 409)
    problem(router.post(f"/v1/ingest/interactions/{iid}/media", params={"kind": "attachment", "id": media_id},
                        content=sent, headers={**ingest["h"], "Content-Type": "image/jpeg"}), 409)
    # An id of another project's media is not this project's to reuse (and says nothing about it).
    stranger = admin.project("eu-west")
    s_ingest = admin.key(stranger, ["ingest"])
    problem(_upload(router, s_ingest, _interaction(router, s_ingest), sent, "image/jpeg", id=media_id), 409)
    bad_id = problem(_upload(router, ingest, iid, sent, "image/jpeg", id="not-a-uuid"), 422)
    assert bad_id["errors"][0]["pointer"] == "/id"
    assert len(sql(_db(topo, "eu-west"), "SELECT 1 FROM media WHERE id = $1", uuid.UUID(media_id))) == 1
    assert len([p for p in (_root(topo, "eu-west") / "projects" / pid / "media").rglob("*") if p.is_file()]) == 1


def test_traits_and_user_agents_are_scrubbed(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    rules = _rules(router, admin, project)
    user = {"external_id": "u-1", "traits": {"plan": "pro", "card": CARD, "api_key": "abc", "nested": [CARD]}}
    r = router.post("/v1/ingest/sessions", headers=ingest["h"], json={
        "user": user, "user_agent": f"Mozilla/5.0 AppWebView token={CARD_DIGITS}x", "device": {"name": CARD}})
    assert r.status_code == 201, r.text
    session_id = r.json()["id"]
    assert "4111" not in r.text
    r = router.post("/v1/ingest/interactions", headers=ingest["h"], json={
        "type": "bug", "content": {"text": "hi"}, "user": {"external_id": "u-2", "traits": {"note": CARD}}})
    assert r.status_code == 201, r.text
    db = _db(topo, "us-west")
    users = {r["external_user_id"]: r for r in sql(
        db, "SELECT external_user_id, traits::text AS traits, privacy_scope FROM end_users WHERE project_id = $1",
        uuid.UUID(pid))}
    assert "4111" not in users["u-1"]["traits"] and "abc" not in users["u-1"]["traits"]
    assert msgspec.json.decode(users["u-1"]["traits"]) == {"plan": "pro", "card": "[redacted:card]",
                                                           "api_key": "[redacted:credentials]",
                                                           "nested": ["[redacted:card]"]}
    assert _json(users["u-1"]["privacy_scope"])["redactions"][rules["card"]]["scopes"] == {"context": 2}
    assert _json(users["u-2"]["traits"]) == {"note": "[redacted:card]"}
    assert _json(users["u-2"]["privacy_scope"])["total"] == 1
    [session] = sql(db, "SELECT user_agent, device::text AS device, privacy_scope FROM sessions WHERE id = $1",
                    uuid.UUID(session_id))
    assert "4111" not in session["user_agent"] + session["device"]
    assert session["user_agent"].startswith("Mozilla/5.0 AppWebView token=[redacted:")
    assert _json(session["privacy_scope"])["total"] == 2
