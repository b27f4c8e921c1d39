"""End users end to end through the router: listing, erasure that leaves no trace, and export."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import secrets
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import asyncpg
import httpx

from common.ids import uuid7
from tests.conftest import Admin, problem, sql

REGION = "us-west"


def _session(router: httpx.Client, key: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = router.post("/v1/ingest/sessions", headers=key["h"], json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _interaction(router: httpx.Client, key: dict[str, Any], **body: Any) -> str:
    r = router.post("/v1/ingest/interactions", headers=key["h"], json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _store_root(topo: dict[str, Any]) -> Path:
    return Path(urlparse(topo["cells"][REGION]["object_store"]).path)


def _media(router: httpx.Client, key: dict[str, Any], topo: dict[str, Any], pid: str, interaction_id: str,
           data: bytes) -> tuple[str, str]:
    """An attachment on the interaction: (media id, storage key). Through the ingest endpoint where the
    cell has it, else written the way that endpoint stores media (object, then row)."""
    r = router.post(f"/v1/ingest/interactions/{interaction_id}/media?kind=attachment", headers={
        **key["h"], "Content-Type": "text/plain"}, content=data)
    dsn = topo["cells"][REGION]["database_url"]
    if r.status_code == 201:
        media_id = r.json()["id"]
        stored = sql(dsn, "SELECT storage_key FROM media WHERE id = $1", uuid.UUID(media_id))[0]["storage_key"]
        return media_id, str(stored)
    assert r.status_code in (404, 405), r.text
    media_id = str(uuid7())
    storage_key = f"projects/{pid}/media/{media_id}"
    path = _store_root(topo) / storage_key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    sql(dsn, """INSERT INTO media (id, project_id, interaction_id, kind, storage_key, content_type, size_bytes,
                                   sha256) VALUES ($1, $2, $3, 'attachment', $4, 'text/plain', $5, $6)""",
        uuid.UUID(media_id), uuid.UUID(pid), uuid.UUID(interaction_id), storage_key, len(data),
        hashlib.sha256(data).hexdigest())
    return media_id, storage_key


def _object(topo: dict[str, Any], key: str, data: bytes) -> str:
    path = _store_root(topo) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return key


class World:
    """One project with person A (to erase or export) and person B (who must stay intact), each with a
    session, interactions, logs, media, votes, a survey response, conversations and a replay."""

    def __init__(self, router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
        self.project = p = admin.project(REGION)
        self.pid = pid = p["id"]
        self.dsn = dsn = topo["cells"][REGION]["database_url"]
        self.ingest = ingest = admin.key(p, ["ingest"])
        self.admin_key = admin.key(p, ["admin"])
        token = secrets.token_hex(6)
        self.canary, self.keep = f"canary{token}", f"keep{token}"
        c, k = self.canary, self.keep
        self.ext, self.email = f"ext-{c}", f"{c}@example.com"
        sa = _session(router, ingest, user={"external_id": self.ext, "email": self.email, "name": f"Ann {c}",
                                            "traits": {"plan": c}},
                      device={"model": c}, user_agent=f"UA {c}", environment="production")
        sb = _session(router, ingest, user={"external_id": f"ext-{k}", "email": f"{k}@example.com"},
                      device={"model": k})
        self.a, self.b = sa["user_id"], sb["user_id"]
        self.sa, self.sb = sa["id"], sb["id"]
        user_a = {"external_id": self.ext}
        self.i1 = _interaction(router, ingest, type="bug", user=user_a, session_id=self.sa,
                               content={"title": f"broken {c}", "description": c},
                               logs={"console": [{"level": "error", "message": c}]},
                               technical_context={"url": f"https://app.example.com/{c}"})
        # Made in A's session without saying who: still A's.
        self.i2 = _interaction(router, ingest, type="feedback", session_id=self.sa, content={"text": f"idea {c}"})
        # Made by A in B's session: A's, and B's session count drops with it.
        self.i3 = _interaction(router, ingest, type="bug", user=user_a, session_id=self.sb,
                               content={"text": f"on a shared device {c}"})
        self.i4 = _interaction(router, ingest, type="survey", user=user_a, session_id=self.sa,
                               content={"text": c})
        self.ib = _interaction(router, ingest, type="bug", user={"external_id": f"ext-{k}"}, session_id=self.sb,
                               content={"text": f"B's report {k}"}, logs={"console": [{"message": k}]})
        self.ma, self.ma_key = _media(router, ingest, topo, pid, self.i1, f"attachment of {c}\n".encode())
        self.mb, self.mb_key = _media(router, ingest, topo, pid, self.ib, f"attachment of {k}\n".encode())

        u = uuid.UUID
        self.f1, self.f2, self.survey = str(uuid7()), str(uuid7()), str(uuid7())
        for fid, votes, links in ((self.f1, 2, 2), (self.f2, 1, 0)):
            sql(dsn, """INSERT INTO feedback_items (id, project_id, title, vote_count, linked_interaction_count)
                        VALUES ($1, $2, 'Dark mode', $3, $4)""", u(fid), u(pid), votes, links)
        for fid, session, user in ((self.f1, self.sa, self.a), (self.f2, self.sa, None), (self.f1, self.sb, self.b)):
            sql(dsn, """INSERT INTO feedback_votes (id, project_id, feedback_item_id, user_id, session_id)
                        VALUES ($1, $2, $3, $4, $5)""", uuid7(), u(pid), u(fid), user and u(user), u(session))
        for iid in (self.i2, self.ib):
            sql(dsn, """INSERT INTO feedback_links (id, project_id, feedback_item_id, interaction_id)
                        VALUES ($1, $2, $3, $4)""", uuid7(), u(pid), u(self.f1), u(iid))
        sql(dsn, "INSERT INTO surveys (id, project_id, name, response_count) VALUES ($1, $2, 'NPS', 2)",
            u(self.survey), u(pid))
        for iid, words in ((self.i4, c), (self.ib, k)):
            sql(dsn, """INSERT INTO survey_responses (id, project_id, survey_id, interaction_id, responses)
                        VALUES ($1, $2, $3, $4, $5::jsonb)""",
                uuid7(), u(pid), u(self.survey), u(iid), json.dumps({"why": words}))
        self.c1, self.c2, self.cb = str(uuid7()), str(uuid7()), str(uuid7())
        for cid, user, session, words in ((self.c1, self.a, self.sa, c), (self.c2, None, self.sa, c),
                                          (self.cb, self.b, self.sb, k)):
            sql(dsn, """INSERT INTO conversations (id, project_id, user_id, session_id, subject, message_count,
                                                   last_message_at)
                        VALUES ($1, $2, $3, $4, $5, 2, now())""",
                u(cid), u(pid), user and u(user), u(session), f"help {words}")
            for direction, body in (("inbound", f"my words {words}"), ("outbound", "We are on it")):
                sql(dsn, """INSERT INTO messages (id, project_id, conversation_id, direction, body)
                            VALUES ($1, $2, $3, $4, $5)""", uuid7(), u(pid), u(cid), direction, body)
        self.ra, self.rb = str(uuid7()), str(uuid7())
        self.ra_keys = [
            _object(topo, f"projects/{pid}/replays/{self.ra}/chunks/000000.json.gz", f"[{c}]".encode()),
            # A chunk the index names outside the replay's own prefix.
            _object(topo, f"projects/{pid}/replay-blobs/{self.ra}-1", f"[{c}]".encode()),
        ]
        self.rb_keys = [_object(topo, f"projects/{pid}/replays/{self.rb}/chunks/000000.json.gz", f"[{k}]".encode())]
        for rid, session, keys in ((self.ra, self.sa, self.ra_keys), (self.rb, self.sb, self.rb_keys)):
            index = [{"index": n, "key": key, "eventCount": 1} for n, key in enumerate(keys)]
            sql(dsn, """INSERT INTO replays (id, project_id, session_id, status, event_count, chunks)
                        VALUES ($1, $2, $3, 'ready', $4, $5::jsonb)""",
                u(rid), u(pid), u(session), len(keys), json.dumps(index))
        sql(dsn, """INSERT INTO integration_links (id, project_id, provider, external_id, internal_type, internal_id)
                    VALUES ($1, $2, 'linear', 'LIN-7', 'interaction', $3)""", uuid7(), u(pid), u(self.i1))

    @property
    def a_interactions(self) -> set[str]:
        return {self.i1, self.i2, self.i3, self.i4}

    def one(self, query: str, *args: Any) -> Any:
        return sql(self.dsn, query, *args)[0][0]


def _rows_mentioning(dsn: str, text: str) -> dict[str, int]:
    """Every table of a store with rows whose text form contains `text` (an auditor's scan)."""

    async def scan() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            tables = await conn.fetch("SELECT table_name FROM information_schema.tables"
                                      " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
            found = {}
            for (table,) in tables:
                n = await conn.fetchval(f'SELECT count(*) FROM "{table}" x WHERE x::text LIKE $1', f"%{text}%")
                if n:
                    found[table] = n
            return found
        finally:
            await conn.close()

    return asyncio.run(scan())


def _rows_referencing(dsn: str, ids: list[str]) -> list[tuple[str, str]]:
    """(table, column) pairs of every uuid column of a store holding one of `ids`."""

    async def scan() -> list[tuple[str, str]]:
        conn = await asyncpg.connect(dsn)
        try:
            columns = await conn.fetch("SELECT table_name, column_name FROM information_schema.columns"
                                       " WHERE table_schema = 'public' AND data_type = 'uuid'")
            return [(t, c) for t, c in columns
                    if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{t}" WHERE "{c}" = ANY($1::uuid[]))',
                                           [uuid.UUID(i) for i in ids])]
        finally:
            await conn.close()

    return asyncio.run(scan())


def _files_mentioning(root: Path, text: str) -> list[str]:
    hits = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if text.encode() in path.read_bytes():
                hits.append(str(path.relative_to(root)))
    return hits


def test_list_search_and_get(router: httpx.Client, admin: Admin) -> None:
    p, other = admin.project(REGION), admin.project(REGION)
    ingest, read, other_read = admin.key(p, ["ingest"]), admin.key(p, ["read"]), admin.key(other, ["read"])
    made = {}
    for ext, email in (("acme-1", "Jane@Example.com"), ("acme-2", None), ("zeta_9", "acme@example.com"),
                       ("100%", "pct@example.com")):
        user = {"external_id": ext, **({"email": email} if email else {})}
        made[ext] = _session(router, ingest, user=user)["user_id"]
    base = f"/v1/projects/{p['id']}/end-users"

    def ids(q: str | None = None) -> list[str]:
        # `@` is sent literally, as browsers do.
        r = router.get(base + ("" if q is None else "?q=" + quote(q, safe="@")), headers=read["h"])
        assert r.status_code == 200, r.text
        return [u["id"] for u in r.json()["data"]]

    assert ids() == [made[e] for e in ("100%", "zeta_9", "acme-2", "acme-1")]
    assert ids(q="acme") == [made[e] for e in ("zeta_9", "acme-2", "acme-1")]  # external id or email prefix
    assert ids(q="jane@") == [made["acme-1"]]  # email ignores case
    assert ids(q="ACME-") == []  # external ids are exact
    assert ids(q="zeta_") == [made["zeta_9"]]
    assert ids(q="%") == [] and ids(q="_") == []  # wildcards are literal
    assert ids(q="100%") == [made["100%"]]
    assert ids(q="example.com") == []  # a prefix, not a substring
    first = router.get(base, params={"limit": 3}, headers=read["h"]).json()
    assert len(first["data"]) == 3 and first["next_cursor"]
    rest = router.get(base, params={"limit": 3, "cursor": first["next_cursor"]}, headers=read["h"]).json()
    assert [u["id"] for u in first["data"] + rest["data"]] == ids() and rest["next_cursor"] is None

    jane = made["acme-1"]
    sid = _session(router, ingest, user={"external_id": "acme-1"})["id"]
    _interaction(router, ingest, type="bug", user={"external_id": "acme-1"}, content={"text": "a"})
    _interaction(router, ingest, type="bug", session_id=sid, content={"text": "b"})
    got = router.get(f"{base}/{jane}", headers=read["h"])
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["external_id"], body["email"], body["traits"]) == ("acme-1", "Jane@Example.com", {})
    assert (body["session_count"], body["interaction_count"], body["conversation_count"], body["vote_count"]) == \
        (2, 2, 0, 0)

    # Tenancy and scopes.
    problem(router.get(f"/v1/projects/{other['id']}/end-users/{jane}", headers=other_read["h"]), 404)
    problem(router.get(f"{base}/{jane}", headers=other_read["h"]), 404)
    problem(router.get(base, headers=other_read["h"]), 404)
    problem(router.get(f"{base}/{uuid7()}", headers=read["h"]), 404)
    problem(router.get(base, headers=ingest["h"]), 403)
    problem(router.get(base, params={"cursor": "nope"}, headers=read["h"]), 422)
    problem(router.get(base, params={"q": ""}, headers=read["h"]), 422)
    assert router.get(f"/v1/projects/{other['id']}/end-users", headers=other_read["h"]).json()["data"] == []


def _roles(router: httpx.Client, admin: Admin, w: World) -> tuple[Admin, dict[str, Any]]:
    return admin.member(w.project, "viewer"), admin.key(w.project, ["write"])


def test_erasure_leaves_no_trace(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    w = World(router, admin, topo)
    pid, u = w.pid, uuid.UUID
    base = f"/v1/projects/{pid}/end-users/{w.a}"
    before = router.get(base, headers=admin.h).json()
    assert (before["session_count"], before["interaction_count"], before["conversation_count"],
            before["vote_count"]) == (1, 4, 2, 2)
    assert w.one("SELECT interaction_count FROM sessions WHERE id = $1", u(w.sb)) == 2
    root = _store_root(topo)
    assert _files_mentioning(root, w.canary) and _rows_mentioning(w.dsn, w.canary)

    # Who may erase: admins only, of this project only.
    viewer, writer = _roles(router, admin, w)
    problem(router.delete(base, headers=viewer.h), 403)
    problem(router.delete(base, headers=writer["h"]), 403)
    stranger = admin.project(REGION)
    stranger_admin = admin.key(stranger, ["admin"])
    problem(router.delete(base, headers=stranger_admin["h"]), 404)
    problem(router.delete(f"/v1/projects/{stranger['id']}/end-users/{w.a}", headers=stranger_admin["h"]), 404)
    assert router.get(base, headers=admin.h).status_code == 200

    r = router.delete(base, headers=w.admin_key["h"])
    assert r.status_code == 204 and r.content == b"", r.text
    problem(router.delete(base, headers=w.admin_key["h"]), 404)
    problem(router.get(base, headers=admin.h), 404)
    problem(router.get(f"{base}/export", headers=admin.h), 404)
    problem(router.get(f"/v1/projects/{pid}/sessions/{w.sa}", headers=admin.h), 404)
    for iid in w.a_interactions:
        problem(router.get(f"/v1/projects/{pid}/interactions/{iid}", headers=admin.h), 404)

    # No row anywhere in the region mentions the person: not their ids from the customer, their email,
    # or anything they wrote, sent, recorded or uploaded. The router's store never had any of it.
    assert _rows_mentioning(w.dsn, w.canary) == {}
    assert _rows_mentioning(topo["router"]["database_url"], w.canary) == {}
    for key in (w.ma_key, *w.ra_keys):
        assert not (root / key).exists(), key
    assert _files_mentioning(root, w.canary) == []
    # Nor does any row point at anything of theirs (the audit entry names the erased id as its target: text).
    assert _rows_referencing(w.dsn, [w.a, w.sa, *w.a_interactions, w.c1, w.c2, w.ra, w.ma]) == []

    # B is intact, and every counter that counted A is exact again.
    b = router.get(f"/v1/projects/{pid}/end-users/{w.b}", headers=admin.h).json()
    assert (b["session_count"], b["interaction_count"], b["conversation_count"], b["vote_count"]) == (1, 1, 1, 1)
    assert router.get(f"/v1/projects/{pid}/interactions/{w.ib}", headers=admin.h).json()["logs"]["console"] == [
        {"message": w.keep}]
    assert router.get(f"/v1/projects/{pid}/sessions/{w.sb}", headers=admin.h).json()["interaction_count"] == 1
    assert w.one("SELECT vote_count FROM feedback_items WHERE id = $1", u(w.f1)) == 1
    assert w.one("SELECT vote_count FROM feedback_items WHERE id = $1", u(w.f2)) == 0
    assert w.one("SELECT linked_interaction_count FROM feedback_items WHERE id = $1", u(w.f1)) == 1
    assert w.one("SELECT response_count FROM surveys WHERE id = $1", u(w.survey)) == 1
    assert w.one("SELECT count(*) FROM messages WHERE conversation_id = $1", u(w.cb)) == 2
    assert w.one("SELECT count(*) FROM replays WHERE id = $1", u(w.rb)) == 1
    assert w.one("SELECT count(*) FROM media WHERE id = $1", u(w.mb)) == 1
    for key in (w.mb_key, *w.rb_keys):
        assert (root / key).exists(), key
    assert set(_rows_mentioning(w.dsn, w.keep)) >= {"end_users", "sessions", "interactions", "interaction_logs",
                                                     "survey_responses", "conversations", "messages"}

    # Audited with counts only; the objects' deletion was recorded and carried out.
    audit = sql(w.dsn, "SELECT actor_type::text, actor_id, meta, meta::text AS t FROM audit_logs"
                       " WHERE project_id = $1 AND action = 'end_user.erased' AND target_id = $2", u(pid), w.a)
    assert len(audit) == 1 and audit[0]["actor_type"] == "api"
    assert w.canary not in audit[0]["t"] and w.ext not in audit[0]["t"]
    assert audit[0]["actor_id"] == w.admin_key["key_prefix"]
    meta = json.loads(audit[0]["meta"])
    assert meta["sessions"] == 1 and meta["interactions"] == 4 and meta["conversations"] == 2
    assert meta["feedback_votes"] == 2 and meta["replays"] == 1 and meta["objects"] == 3
    outbox = sql(w.dsn, "SELECT payload, dispatched_at FROM outbox WHERE project_id = $1 AND kind = 'objects.delete'",
                 u(pid))
    assert len(outbox) == 1 and outbox[0]["dispatched_at"] is not None
    assert sorted(json.loads(outbox[0]["payload"])["keys"]) == sorted([w.ma_key, *w.ra_keys])


def test_export_holds_everything_about_the_person(router: httpx.Client, admin: Admin,
                                                 topo: dict[str, Any]) -> None:
    w = World(router, admin, topo)
    pid = w.pid
    base = f"/v1/projects/{pid}/end-users/{w.a}/export"
    viewer, writer = _roles(router, admin, w)
    problem(router.get(base, headers=viewer.h), 403)
    problem(router.get(base, headers=writer["h"]), 403)
    stranger = admin.project(REGION)
    stranger_admin = admin.key(stranger, ["admin"])
    problem(router.get(base, headers=stranger_admin["h"]), 404)
    problem(router.get(f"/v1/projects/{stranger['id']}/end-users/{w.a}/export", headers=stranger_admin["h"]), 404)
    problem(router.get(f"/v1/projects/{pid}/end-users/{uuid7()}/export", headers=admin.h), 404)

    r = router.get(base, headers=admin.h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == f'attachment; filename="end-user-{w.a}.zip"'
    assert int(r.headers["content-length"]) == len(r.content)
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert archive.testzip() is None
    media_name = f"media/{w.i1}/{w.ma}.txt"
    # The replay's recording as stored: every object its chunk index names, under its key in the project.
    replay_names = [k.removeprefix(f"projects/{pid}/") for k in w.ra_keys]
    assert sorted(archive.namelist()) == sorted([media_name, "person.json", *replay_names])
    assert archive.read(media_name) == f"attachment of {w.canary}\n".encode()
    for key, name in zip(w.ra_keys, replay_names, strict=True):
        assert archive.read(name) == (_store_root(topo) / key).read_bytes() and w.canary.encode() in archive.read(name)
    for name in archive.namelist():
        assert w.keep.encode() not in archive.read(name), name  # nothing of B's

    doc = json.loads(archive.read("person.json"))
    assert doc["project_id"] == pid
    person = doc["end_user"]
    assert (person["id"], person["external_user_id"], person["email"]) == (w.a, w.ext, w.email)
    assert person["traits"] == {"plan": w.canary}
    assert [s["id"] for s in doc["sessions"]] == [w.sa]
    assert doc["sessions"][0]["device"] == {"model": w.canary} and len(doc["sessions"][0]["ip_hash"]) == 64
    by_id = {i["id"]: i for i in doc["interactions"]}
    assert set(by_id) == w.a_interactions
    assert by_id[w.i2]["user_id"] is None and by_id[w.i2]["content"] == {"text": f"idea {w.canary}"}
    assert by_id[w.i1]["logs"][0]["console"] == [{"level": "error", "message": w.canary}]
    assert by_id[w.i1]["technical_context"] == {"url": f"https://app.example.com/{w.canary}"}
    assert [(m["id"], m["file"]) for m in by_id[w.i1]["media"]] == [(w.ma, media_name)]
    assert sorted((v["feedback_item_id"], v["session_id"]) for v in doc["feedback_votes"]) == sorted(
        [(w.f1, w.sa), (w.f2, w.sa)])
    assert [(s["survey_id"], s["survey_name"], s["responses"]) for s in doc["survey_responses"]] == [
        (w.survey, "NPS", {"why": w.canary})]
    conversations = {c["id"]: c for c in doc["conversations"]}
    assert set(conversations) == {w.c1, w.c2}
    assert [m["body"] for m in conversations[w.c1]["messages"]] == [f"my words {w.canary}", "We are on it"]
    assert [(x["id"], x["session_id"], len(x["chunks"])) for x in doc["replays"]] == [(w.ra, w.sa, 2)]
    assert sorted(doc["replays"][0]["files"]) == sorted(replay_names)

    audit = sql(w.dsn, "SELECT meta, meta::text AS t FROM audit_logs WHERE project_id = $1"
                       " AND action = 'end_user.exported' AND target_id = $2", uuid.UUID(pid), w.a)
    assert len(audit) == 1 and w.canary not in audit[0]["t"] and w.ext not in audit[0]["t"]
    assert json.loads(audit[0]["meta"])["interactions"] == 4
    # Exporting changes nothing.
    assert router.get(f"/v1/projects/{pid}/end-users/{w.a}", headers=admin.h).json()["interaction_count"] == 4
    # An admin key may export too.
    again = router.get(base, headers=w.admin_key["h"])
    assert again.status_code == 200 and zipfile.ZipFile(io.BytesIO(again.content)).read(media_name)


def test_pending_object_deletion_job_is_idempotent(tmp_path: Path) -> None:
    """What a worker runs for an `objects.delete` outbox row the API could not finish."""
    from types import SimpleNamespace

    from cell.users.erasure import delete_objects_job

    root = tmp_path / "objects"
    pid = uuid7()
    mine = [f"projects/{pid}/media/{uuid7()}", f"projects/{pid}/replays/{uuid7()}/chunks/000000.json.gz"]
    kept = [f"projects/{pid}/media/{uuid7()}", "elsewhere/not-a-project-object"]
    for key in mine + kept:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"x")
    ctx: dict[str, Any] = {"settings": SimpleNamespace(object_store=f"file://{root}")}
    payload = {"keys": [*mine, "elsewhere/not-a-project-object"]}
    asyncio.run(delete_objects_job(ctx, payload))
    asyncio.run(delete_objects_job(ctx, payload))  # delivered twice: nothing changes, nothing fails
    assert [k for k in mine if (root / k).exists()] == []
    assert [k for k in kept if (root / k).exists()] == kept
