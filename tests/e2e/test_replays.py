"""Session replays end to end: chunks stored as objects in the project's region, indexed under a row lock,
finished through the outbox, and streamed back as one time-ordered event array."""

from __future__ import annotations

import concurrent.futures
import gzip
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import msgspec

from common.ids import uuid7
from tests.conftest import Admin, problem, sql

MiB = 1024 * 1024
T0 = 1_760_000_000_000  # ms since the epoch


def _events(start: int, n: int, step: int = 10, tag: str = "") -> list[dict[str, Any]]:
    return [{"type": 3, "timestamp": start + i * step, "data": {"source": 1, "tag": f"{tag}{i}"}} for i in range(n)]


def _chunk(router: httpx.Client, key: dict[str, Any], replay_id: Any, index: int, session_id: Any,
           events: Any, *, gz: bool = False, **params: Any) -> httpx.Response:
    body = msgspec.json.encode(events)
    headers = {**key["h"], "Content-Type": "application/json"}
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return router.post(f"/v1/ingest/replays/{replay_id}/chunks/{index}",
                       params={"session_id": str(session_id), **params}, content=body, headers=headers)


def _files(topo: dict[str, Any], region: str, project_id: str) -> list[str]:
    root = Path(urlparse(topo["cells"][region]["object_store"]).path)
    base = root / "projects" / project_id
    return sorted(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file()) if base.exists() else []


def _db(topo: dict[str, Any], region: str) -> str:
    return str(topo["cells"][region]["database_url"])


def test_chunks_out_of_order_idempotent_finish_and_events(router: httpx.Client, admin: Admin,
                                                          topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    ingest, read = admin.key(project, ["ingest"]), admin.key(project, ["read"])
    replay_id, session_id = uuid7(), uuid7()
    # Chunk 1 overlaps chunk 0 in time, and its events arrive unsorted; chunk 2 comes first and gzipped.
    c0 = _events(T0, 5, tag="a")
    c1 = _events(T0 + 15, 3, step=20, tag="b")[::-1]
    c2 = _events(T0 + 1000, 4, tag="c")
    r2 = _chunk(router, ingest, replay_id, 2, session_id, c2, gz=True)
    assert r2.status_code == 201, r2.text
    assert r2.headers["x-relay-region"] == "eu-west"
    assert r2.json() == {"replay_id": str(replay_id), "status": "recording", "chunk": {
        "index": 2, "storageKey": f"projects/{pid}/replays/{replay_id}/chunks/000002.json.gz",
        "eventCount": 4, "startTime": T0 + 1000, "endTime": T0 + 1030}}
    assert _chunk(router, ingest, replay_id, 0, session_id, c0).status_code == 201
    r1 = _chunk(router, ingest, replay_id, 1, session_id, c1)
    assert r1.status_code == 201 and r1.json()["chunk"]["startTime"] == T0 + 15
    # The same index again: 200 with what is stored, nothing new (even with other events in the body).
    again = _chunk(router, ingest, replay_id, 1, session_id, _events(T0 + 5000, 9))
    assert again.status_code == 200 and again.json() == r1.json()

    # Stored as gzip objects in this region only; the session was created in this project.
    keys = _files(topo, "eu-west", pid)
    assert keys == [f"projects/{pid}/replays/{replay_id}/chunks/{i:06d}.json.gz" for i in range(3)]
    assert _files(topo, "us-west", pid) == []
    assert not sql(_db(topo, "us-west"), "SELECT 1 FROM replays WHERE id = $1", replay_id)
    root = Path(urlparse(topo["cells"]["eu-west"]["object_store"]).path)
    assert msgspec.json.decode(gzip.decompress((root / keys[1]).read_bytes())) == sorted(
        c1, key=lambda e: e["timestamp"])
    [session] = sql(_db(topo, "eu-west"), "SELECT project_id FROM sessions WHERE id = $1", session_id)
    assert str(session["project_id"]) == pid

    got = router.get(f"/v1/projects/{pid}/replays/{replay_id}", headers=read["h"])
    assert got.status_code == 200, got.text
    replay = got.json()
    assert replay["status"] == "recording" and replay["session_id"] == str(session_id)
    assert replay["event_count"] == 12 and replay["chunk_count"] == 3 and replay["duration"] == 1030
    assert replay["started_at"].startswith("2025-10-09T08:53:20") and replay["interaction_id"] is None
    assert [c["index"] for c in replay["chunks"]] == [0, 1, 2]
    assert [c["eventCount"] for c in replay["chunks"]] == [5, 3, 4]

    events = router.get(f"/v1/projects/{pid}/replays/{replay_id}/events", headers=read["h"])
    assert events.status_code == 200 and events.headers["content-type"].startswith("application/json")
    merged = events.json()
    assert len(merged) == 12
    assert [e["timestamp"] for e in merged] == sorted(e["timestamp"] for e in c0 + c1 + c2)
    assert [e["data"]["tag"] for e in merged] == ["a0", "a1", "b0", "a2", "a3", "b1", "a4", "b2",
                                                  "c0", "c1", "c2", "c3"]
    assert merged[0] == c0[0]  # events come back as they were sent

    # Finish: 202, processing, one outbox job in the same transaction; repeating it adds nothing.
    interaction = router.post("/v1/ingest/interactions", headers=ingest["h"],
                              json={"type": "bug", "content": {"text": "replay attached"}}).json()
    for _ in range(2):
        done = router.post(f"/v1/ingest/replays/{replay_id}/finish", params={"interaction_id": interaction["id"]},
                           headers=ingest["h"])
        assert done.status_code == 202, done.text
        # The region's worker may already have processed it: finishing moves it past recording either way.
        assert done.json()["status"] in ("processing", "ready") and done.json()["interaction_id"] == interaction["id"]
    jobs = sql(_db(topo, "eu-west"), "SELECT kind, payload FROM outbox WHERE project_id = $1 AND kind = $2",
               uuid.UUID(pid), "replay.finished")
    assert [msgspec.json.decode(j["payload"]) for j in jobs] == [{"replay_id": str(replay_id)}]
    [row] = sql(_db(topo, "eu-west"), "SELECT status::text, jsonb_array_length(chunks) AS n FROM replays "
                                      "WHERE id = $1", replay_id)
    assert row["status"] in ("processing", "ready") and row["n"] == 3
    # No new chunk once finished; a retry of a stored one is still a 200.
    assert problem(_chunk(router, ingest, replay_id, 3, session_id, _events(T0 + 2000, 2)), 409)["detail"]
    assert _chunk(router, ingest, replay_id, 0, session_id, c0).status_code == 200
    assert len(_files(topo, "eu-west", pid)) == 3

    listed = router.get(f"/v1/projects/{pid}/replays", params={"status": row["status"]}, headers=read["h"]).json()
    if listed["data"] == []:  # processed between the two reads
        listed = router.get(f"/v1/projects/{pid}/replays", params={"status": "ready"}, headers=read["h"]).json()
    assert [r["id"] for r in listed["data"]] == [str(replay_id)] and listed["next_cursor"] is None
    assert "chunks" not in listed["data"][0]
    assert router.get(f"/v1/projects/{pid}/replays", params={"status": "recording"},
                      headers=read["h"]).json()["data"] == []


def test_concurrent_chunks_keep_the_index_complete(router: httpx.Client, admin: Admin,
                                                   topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    replay_id, session_id = uuid7(), uuid7()
    n = 16
    # Every index twice, all at once, on a replay that does not exist yet (its creation races too).
    jobs = [i % n for i in range(2 * n)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda i: _chunk(router, ingest, replay_id, i, session_id, _events(T0 + i * 100, i + 1), gz=i % 2 == 1),
            jobs))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * n + [201] * n, [a.text for a in answers if a.status_code not in (200, 201)]
    replay = router.get(f"/v1/projects/{pid}/replays/{replay_id}", headers=admin.h).json()
    assert [c["index"] for c in replay["chunks"]] == list(range(n))
    assert replay["event_count"] == sum(i + 1 for i in range(n))
    assert len(_files(topo, "us-west", pid)) == n
    events = router.get(f"/v1/projects/{pid}/replays/{replay_id}/events", headers=admin.h).json()
    assert len(events) == replay["event_count"]
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    [row] = sql(_db(topo, "us-west"), "SELECT count(*) AS n FROM replays WHERE project_id = $1", uuid.UUID(pid))
    assert row["n"] == 1


def test_limits_and_invalid_chunks(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    replay_id, session_id = uuid7(), uuid7()
    url = f"/v1/ingest/replays/{replay_id}/chunks/0"
    params = {"session_id": str(session_id)}
    gz = {**ingest["h"], "Content-Type": "application/json", "Content-Encoding": "gzip"}
    # Over 5 MiB as sent.
    big = msgspec.json.encode(_events(T0, 1))[:-1] + b"," + b" " * (5 * MiB) + b"]"
    problem(router.post(url, params=params, content=big, headers=ingest["h"]), 413)
    # Small as sent, over 50 MiB once decompressed (stopped at the limit, not inflated in full).
    bomb = gzip.compress(b"[" + b" " * (50 * MiB) + b"]", compresslevel=9)
    assert len(bomb) < MiB
    refused = router.post(url, params=params, content=bomb, headers=gz)
    assert problem(refused, 413) and refused.headers["x-relay-region"] == "us-west"  # the cell stopped inflating
    # Within both limits, a big gzipped chunk is fine.
    padded = gzip.compress(msgspec.json.encode(_events(T0, 2))[:-1] + b"," + b" " * (20 * MiB)
                           + msgspec.json.encode(_events(T0 + 50, 1))[1:])
    assert len(padded) < 5 * MiB
    ok = router.post(f"/v1/ingest/replays/{uuid7()}/chunks/0", params=params, content=padded, headers=gz)
    assert ok.status_code == 201 and ok.json()["chunk"]["eventCount"] == 3

    problem(router.post(url, params=params, content=b"not gzip at all", headers=gz), 400)
    problem(router.post(url, params=params, content=gzip.compress(b"[]")[:-6], headers=gz), 400)
    problem(router.post(url, params=params, content=b"[{", headers=ingest["h"]), 400)
    problem(router.post(url, params=params, content=b"[]",
                        headers={**ingest["h"], "Content-Encoding": "br"}), 415)
    assert problem(_chunk(router, ingest, replay_id, 0, session_id, {"events": []}), 422)["errors"]
    assert problem(_chunk(router, ingest, replay_id, 0, session_id, []), 422)["errors"][0]["pointer"] == ""
    assert problem(_chunk(router, ingest, replay_id, 0, session_id, [1]), 422)["errors"][0]["pointer"] == "/0"
    bad = problem(_chunk(router, ingest, replay_id, 0, session_id,
                         [{"type": 2, "timestamp": T0}, {"type": 3}, {"type": "x", "timestamp": "now"},
                          {"type": True, "timestamp": -1}]), 422)
    assert [e["pointer"] for e in bad["errors"]] == ["/1/timestamp", "/2/timestamp", "/2/type", "/3/timestamp",
                                                     "/3/type"]
    index = problem(_chunk(router, ingest, replay_id, 1_000_000, session_id, _events(T0, 1)), 422)
    assert index["errors"][0]["pointer"] == "/index"
    missing = router.post(url, content=msgspec.json.encode(_events(T0, 1)), headers=ingest["h"])
    assert problem(missing, 422)["errors"][0]["pointer"] == "/session_id"
    iid = problem(_chunk(router, ingest, replay_id, 0, session_id, _events(T0, 1), interaction_id=str(uuid7())), 422)
    assert iid["errors"][0]["pointer"] == "/interaction_id"
    # Nothing of the refused chunks was kept.
    assert not sql(_db(topo, "us-west"), "SELECT 1 FROM replays WHERE id = $1", replay_id)
    assert not [k for k in _files(topo, "us-west", pid) if str(replay_id) in k]
    problem(router.post(f"/v1/ingest/replays/{replay_id}/finish", headers=ingest["h"]), 404)


def test_tenancy_and_scopes(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    a, b = admin.project("us-west"), admin.project("us-west")  # same cell: only the project scoping separates them
    a_ingest, b_ingest = admin.key(a, ["ingest"]), admin.key(b, ["ingest"])
    a_read = admin.key(a, ["read"])
    b_replay, b_session = uuid7(), uuid7()
    assert _chunk(router, b_ingest, b_replay, 0, b_session, _events(T0, 3)).status_code == 201
    b_files = _files(topo, "us-west", b["id"])

    # A's key cannot add to, finish, or hijack B's replay or session.
    problem(_chunk(router, a_ingest, b_replay, 1, b_session, _events(T0 + 100, 1)), 404)
    problem(_chunk(router, a_ingest, b_replay, 1, uuid7(), _events(T0 + 100, 1)), 404)
    problem(router.post(f"/v1/ingest/replays/{b_replay}/finish", headers=a_ingest["h"]), 404)
    hijack = problem(_chunk(router, a_ingest, uuid7(), 0, b_session, _events(T0, 1)), 422)
    assert hijack["errors"][0]["pointer"] == "/session_id"
    for path in (f"replays/{b_replay}", f"replays/{b_replay}/events"):  # B's ids under A's path
        for creds in (a_read["h"], admin.h):
            problem(router.get(f"/v1/projects/{a['id']}/{path}", headers=creds), 404)
    for path in ("replays", f"replays/{b_replay}", f"replays/{b_replay}/events"):  # B's path, A's key
        problem(router.get(f"/v1/projects/{b['id']}/{path}", headers=a_read["h"]), 404)
    assert router.get(f"/v1/projects/{a['id']}/replays", params={"session_id": str(b_session)},
                      headers=a_read["h"]).json() == {"data": [], "next_cursor": None}
    assert _files(topo, "us-west", b["id"]) == b_files
    [row] = sql(_db(topo, "us-west"), "SELECT status::text, jsonb_array_length(chunks) AS n FROM replays WHERE id = $1",
                b_replay)
    assert (row["status"], row["n"]) == ("recording", 1)

    # Another session's chunk for an existing replay is a conflict.
    problem(_chunk(router, b_ingest, b_replay, 1, uuid7(), _events(T0 + 100, 1)), 409)

    # Scopes: only ingest keys upload; ingest keys do not read.
    a_replay, a_session = uuid7(), uuid7()
    problem(_chunk(router, a_read, a_replay, 0, a_session, _events(T0, 1)), 403)
    problem(router.post(f"/v1/ingest/replays/{a_replay}/finish", headers=a_read["h"]), 403)
    assert _chunk(router, a_ingest, a_replay, 0, a_session, _events(T0, 1)).status_code == 201
    for path in ("replays", f"replays/{a_replay}", f"replays/{a_replay}/events"):
        problem(router.get(f"/v1/projects/{a['id']}/{path}", headers=a_ingest["h"]), 403)
        assert router.get(f"/v1/projects/{a['id']}/{path}", headers=a_read["h"]).status_code == 200


def test_list_filters_and_paging(router: httpx.Client, admin: Admin) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    s1, s2 = uuid7(), uuid7()
    made = []
    for session in (s1, s1, s2):
        rid = uuid7()
        assert _chunk(router, ingest, rid, 0, session, _events(T0, 2)).status_code == 201
        made.append(str(rid))
    assert router.post(f"/v1/ingest/replays/{made[0]}/finish", headers=ingest["h"]).status_code == 202
    by_session = router.get(f"/v1/projects/{pid}/replays", params={"session_id": str(s1)}, headers=admin.h).json()
    assert sorted(r["id"] for r in by_session["data"]) == sorted(made[:2])
    both = router.get(f"/v1/projects/{pid}/replays", params={"session_id": str(s1), "status": "recording"},
                      headers=admin.h).json()
    assert [r["id"] for r in both["data"]] == [made[1]]
    first = router.get(f"/v1/projects/{pid}/replays", params={"limit": 2}, headers=admin.h).json()
    rest = router.get(f"/v1/projects/{pid}/replays", params={"limit": 2, "cursor": first["next_cursor"]},
                      headers=admin.h).json()
    assert [r["id"] for r in first["data"] + rest["data"]] == made[::-1] and rest["next_cursor"] is None
    problem(router.get(f"/v1/projects/{pid}/replays", params={"status": "paused"}, headers=admin.h), 422)
    problem(router.get(f"/v1/projects/{pid}/replays", params={"cursor": "garbage"}, headers=admin.h), 422)
