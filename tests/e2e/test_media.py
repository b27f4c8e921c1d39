"""Media end to end: uploads streamed into the right region's object store, checked by type and size, served back."""

from __future__ import annotations

import concurrent.futures
import hashlib
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import msgspec

from tests.conftest import Admin, problem, sql, until

MiB = 1024 * 1024
LIMIT = 25 * MiB


def _png(width: int = 3, height: int = 2) -> bytes:
    """A real PNG (RGB, a few pixels) built by hand."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (40 * x, 90, 200 - 30 * y))
                    for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


PNG = _png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 32
WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm" + b"\x00" * 32


def _store(topo: dict[str, Any], region: str) -> Path:
    return Path(urlparse(topo["cells"][region]["object_store"]).path)


def _files(topo: dict[str, Any], region: str, project_id: str) -> list[Path]:
    root = _store(topo, region) / "projects" / project_id
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _media_rows(topo: dict[str, Any], region: str, project_id: str) -> list[Any]:
    return sql(topo["cells"][region]["database_url"], "SELECT * FROM media WHERE project_id = $1",
               uuid.UUID(project_id))


def _interaction(router: httpx.Client, key: dict[str, Any]) -> str:
    r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": {"text": "see"}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _upload(router: httpx.Client, key: dict[str, Any], iid: str, body: Any, content_type: str,
            kind: str = "screenshot", **headers: str) -> httpx.Response:
    return router.post(f"/v1/ingest/interactions/{iid}/media", params={"kind": kind}, content=body,
                       headers={**key["h"], "Content-Type": content_type, **headers})


def _wait_until(check: Any, timeout: float = 10.0) -> None:
    """Poll a condition that another process makes true (the cell cleaning up after an aborted upload)."""
    until(check, timeout, every=0.05)


def test_png_roundtrip_lands_in_its_region_only(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    for region in topo["cells"]:
        project = admin.project(region)
        pid = project["id"]
        ingest, read = admin.key(project, ["ingest"]), admin.key(project, ["read"])
        iid = _interaction(router, ingest)
        r = _upload(router, ingest, iid, PNG, "image/png")
        assert r.status_code == 201, r.text
        assert r.headers["x-relay-region"] == region
        media = r.json()
        assert {k: media[k] for k in ("kind", "content_type", "size_bytes")} == {
            "kind": "screenshot", "content_type": "image/png", "size_bytes": len(PNG)}
        assert media["interaction_id"] == iid and media["sha256"] == hashlib.sha256(PNG).hexdigest()
        # The bytes sit under projects/{pid}/media/{id} in this region's store, and in no other.
        files = _files(topo, region, pid)
        assert [f.relative_to(_store(topo, region)).as_posix() for f in files] == [
            f"projects/{pid}/media/{media['id']}"]
        assert files[0].read_bytes() == PNG
        for other in topo["cells"]:
            if other != region:
                assert _files(topo, other, pid) == []
                assert _media_rows(topo, other, pid) == []
        [row] = _media_rows(topo, region, pid)
        assert row["storage_key"] == f"projects/{pid}/media/{media['id']}" and row["size_bytes"] == len(PNG)
        # Served back to readers.
        got = router.get(f"/v1/projects/{pid}/media/{media['id']}", headers=read["h"])
        assert got.status_code == 200 and got.json() == media
        listed = router.get(f"/v1/projects/{pid}/interactions/{iid}/media", headers=admin.h)
        assert listed.json() == {"data": [media], "next_cursor": None}
        content = router.get(f"/v1/projects/{pid}/media/{media['id']}/content", headers=read["h"])
        assert content.status_code == 200 and content.content == PNG
        assert content.headers["content-type"] == "image/png"
        assert content.headers["x-content-type-options"] == "nosniff"
        assert content.headers["content-disposition"].startswith("inline")
        assert content.headers["x-relay-region"] == region


def test_attachments_are_served_as_downloads(router: httpx.Client, admin: Admin) -> None:
    project = admin.project("us-west")
    ingest = admin.key(project, ["ingest"])
    iid = _interaction(router, ingest)
    bodies = {
        "application/pdf": PDF, "text/plain; charset=utf-8": "héllo, wörld\nline 2\n".encode(),
        "application/json": b' {"a": [1, 2, {"b": null}]}', "application/zip": b"PK\x03\x04" + b"\x00" * 40,
        "image/jpeg": JPEG, "video/webm": WEBM,
    }
    for declared, body in bodies.items():
        r = _upload(router, ingest, iid, body, declared, kind="attachment")
        assert r.status_code == 201, (declared, r.text)
        media = r.json()
        assert media["content_type"] == declared.split(";")[0] and media["size_bytes"] == len(body)
        content = router.get(f"/v1/projects/{project['id']}/media/{media['id']}/content", headers=admin.h)
        assert content.content == body and content.headers["x-content-type-options"] == "nosniff"
        assert content.headers["content-type"].split(";")[0] == declared.split(";")[0]
        disposition = content.headers["content-disposition"]
        assert disposition.startswith("inline" if declared == "image/jpeg" else "attachment"), disposition
    video = _upload(router, ingest, iid, MP4, "video/mp4", kind="video")
    assert video.status_code == 201 and video.json()["kind"] == "video"


def test_wrong_type_or_magic_is_415_and_keeps_nothing(router: httpx.Client, admin: Admin,
                                                       topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    iid = _interaction(router, ingest)
    refused = [
        ("screenshot", "image/png", JPEG),                      # declared PNG, bytes JPEG
        ("screenshot", "image/png", b"<html><script>alert(1)</script></html>"),
        ("screenshot", "image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),  # type not allowed
        ("screenshot", "application/pdf", PDF),                 # allowed for attachments, not screenshots
        ("video", "image/png", PNG),
        ("video", "video/mp4", WEBM),
        ("attachment", "text/plain", PNG),                      # binary dressed as text
        ("attachment", "application/json", b"hello, not json"),
        ("attachment", "text/html", b"<html></html>"),
        ("attachment", "application/zip", PDF),
        ("attachment", "image/png", PNG[:4] + b"garbage" * 100),  # truncated signature
    ]
    for kind, declared, body in refused:
        p = problem(_upload(router, ingest, iid, body, declared, kind=kind), 415)
        assert p["detail"], p
    # A bigger refused body (several MiB, answered before it is read) still gets its 415 through the router.
    problem(_upload(router, ingest, iid, b"\x00" * (4 * MiB), "image/png"), 415)
    assert _files(topo, "us-west", pid) == [] and _media_rows(topo, "us-west", pid) == []
    problem(_upload(router, ingest, iid, b"", "image/png"), 400)
    problem(router.post(f"/v1/ingest/interactions/{iid}/media", params={"kind": "screenshot"}, content=PNG,
                        headers=ingest["h"]), 415)  # no Content-Type at all
    bad_kind = problem(_upload(router, ingest, iid, PNG, "image/png", kind="replay_blob"), 422)
    assert bad_kind["errors"][0]["pointer"] == "/kind"
    no_kind = router.post(f"/v1/ingest/interactions/{iid}/media", content=PNG,
                          headers={**ingest["h"], "Content-Type": "image/png"})
    assert problem(no_kind, 422)["errors"][0]["pointer"] == "/kind"
    problem(_upload(router, ingest, "0190a4f2-0000-7000-8000-000000000000", PNG, "image/png"), 404)
    assert _files(topo, "us-west", pid) == [] and _media_rows(topo, "us-west", pid) == []


def test_size_limit_is_enforced_while_streaming(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    iid = _interaction(router, ingest)
    head = PNG[:16]
    # Declared too large: refused before a byte is forwarded.
    problem(_upload(router, ingest, iid, head + b"\x00" * (LIMIT + 1 - len(head)), "image/png"), 413)

    def chunked(total: int) -> Iterator[bytes]:
        yield head
        sent = len(head)
        while sent < total:
            n = min(MiB, total - sent)
            sent += n
            yield b"\x00" * n

    # No Content-Length: the stream is cut at the limit, and the cell keeps no partial object.
    problem(_upload(router, ingest, iid, chunked(LIMIT + 1), "image/png"), 413)
    _wait_until(lambda: _files(topo, "us-west", pid) == [])
    assert _media_rows(topo, "us-west", pid) == []
    # Exactly the limit is fine.
    r = _upload(router, ingest, iid, chunked(LIMIT), "image/png")
    assert r.status_code == 201, r.text
    assert r.json()["size_bytes"] == LIMIT
    [stored] = _files(topo, "us-west", pid)
    assert stored.stat().st_size == LIMIT
    assert [row["size_bytes"] for row in _media_rows(topo, "us-west", pid)] == [LIMIT]


def test_tenancy_scopes_delete_and_paging(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    a, b = admin.project("us-west"), admin.project("us-west")  # same cell: only the project scoping separates them
    a_ingest, b_ingest = admin.key(a, ["ingest"]), admin.key(b, ["ingest"])
    a_read, a_write = admin.key(a, ["read"]), admin.key(a, ["write"])
    a_iid, b_iid = _interaction(router, a_ingest), _interaction(router, b_ingest)
    b_media = _upload(router, b_ingest, b_iid, PNG, "image/png").json()
    a_media = _upload(router, a_ingest, a_iid, PNG, "image/png").json()

    # Project A's credentials never reach B's media: B's ids under A's path, and B's path itself.
    problem(_upload(router, a_ingest, b_iid, PNG, "image/png"), 404)
    for creds in (a_read["h"], a_write["h"], admin.h):
        problem(router.get(f"/v1/projects/{a['id']}/interactions/{b_iid}/media", headers=creds), 404)
        problem(router.get(f"/v1/projects/{a['id']}/media/{b_media['id']}", headers=creds), 404)
        problem(router.get(f"/v1/projects/{a['id']}/media/{b_media['id']}/content", headers=creds), 404)
    for creds in (a_read["h"], a_write["h"]):
        problem(router.get(f"/v1/projects/{b['id']}/interactions/{b_iid}/media", headers=creds), 404)
        problem(router.get(f"/v1/projects/{b['id']}/media/{b_media['id']}", headers=creds), 404)
        problem(router.get(f"/v1/projects/{b['id']}/media/{b_media['id']}/content", headers=creds), 404)
    problem(router.delete(f"/v1/projects/{a['id']}/media/{b_media['id']}", headers=a_write["h"]), 404)
    problem(router.delete(f"/v1/projects/{b['id']}/media/{b_media['id']}", headers=a_write["h"]), 404)
    assert len(_files(topo, "us-west", b["id"])) == 1 and len(_media_rows(topo, "us-west", b["id"])) == 1

    # Scopes: ingest only uploads, read only reads, deleting needs write (or agent and above).
    problem(_upload(router, a_read, a_iid, PNG, "image/png"), 403)
    problem(_upload(router, a_write, a_iid, PNG, "image/png"), 403)
    problem(router.get(f"/v1/projects/{a['id']}/media/{a_media['id']}", headers=a_ingest["h"]), 403)
    problem(router.get(f"/v1/projects/{a['id']}/media/{a_media['id']}/content", headers=a_ingest["h"]), 403)
    problem(router.delete(f"/v1/projects/{a['id']}/media/{a_media['id']}", headers=a_read["h"]), 403)
    viewer = admin.member(a, "viewer")
    assert router.get(f"/v1/projects/{a['id']}/media/{a_media['id']}/content", headers=viewer.h).content == PNG
    problem(router.delete(f"/v1/projects/{a['id']}/media/{a_media['id']}", headers=viewer.h), 403)

    # Paging an interaction's media, newest first, concurrently uploaded.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        more = list(pool.map(lambda _: _upload(router, a_ingest, a_iid, PNG, "image/png"), range(4)))
    assert all(m.status_code == 201 for m in more)
    ids = {a_media["id"], *(m.json()["id"] for m in more)}
    first = router.get(f"/v1/projects/{a['id']}/interactions/{a_iid}/media", params={"limit": 3},
                       headers=a_read["h"]).json()
    assert len(first["data"]) == 3 and first["next_cursor"]
    rest = router.get(f"/v1/projects/{a['id']}/interactions/{a_iid}/media",
                      params={"limit": 3, "cursor": first["next_cursor"]}, headers=a_read["h"]).json()
    assert rest["next_cursor"] is None
    listed = first["data"] + rest["data"]
    seen = [m["id"] for m in listed]
    assert set(seen) == ids and len(seen) == len(ids)
    order = [(m["created_at"], m["id"]) for m in listed]
    assert order == sorted(order, reverse=True)  # newest first

    # Delete: bytes and row gone, audited; B untouched.
    d = router.delete(f"/v1/projects/{a['id']}/media/{a_media['id']}", headers=a_write["h"])
    assert d.status_code == 204, d.text
    problem(router.get(f"/v1/projects/{a['id']}/media/{a_media['id']}", headers=a_read["h"]), 404)
    problem(router.get(f"/v1/projects/{a['id']}/media/{a_media['id']}/content", headers=a_read["h"]), 404)
    problem(router.delete(f"/v1/projects/{a['id']}/media/{a_media['id']}", headers=a_write["h"]), 404)
    names = {p.name for p in _files(topo, "us-west", a["id"])}
    assert a_media["id"] not in names and len(names) == 4
    audit = sql(topo["cells"]["us-west"]["database_url"],
                "SELECT actor_type, action, target_type, meta FROM audit_logs WHERE project_id = $1 AND target_id = $2",
                uuid.UUID(a["id"]), a_media["id"])
    assert [(x["actor_type"], x["action"], x["target_type"]) for x in audit] == [("api", "media.deleted", "media")]
    assert msgspec.json.decode(audit[0]["meta"]) == {"kind": "screenshot"}
    assert len(_files(topo, "us-west", b["id"])) == 1
