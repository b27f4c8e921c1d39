"""Replay processing end to end: the region's worker reads every chunk back after `finish` (or after the
SDK went quiet) and moves the replay to `ready` with figures taken from the events, or to `failed` with a
reason; repeated and concurrent deliveries of the job change nothing more."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import msgspec
import pytest
from saq import Queue
from saq.job import Status

from common.ids import uuid7
from tests.conftest import Admin, Stack, problem, sql, until
from tests.services import StorePostgres

T0 = 1_760_000_000_000  # ms since the epoch
IDLE_TIMEOUT = 2  # seconds, for the private stack


def _events(start: int, n: int, step: int = 10, tag: str = "") -> list[dict[str, Any]]:
    return [{"type": 3, "timestamp": start + i * step, "data": {"source": 1, "tag": f"{tag}{i}"}} for i in range(n)]


def _chunk(router: httpx.Client, key: dict[str, Any], replay_id: Any, index: int, session_id: Any,
           events: Any, *, gz: bool = False) -> httpx.Response:
    body = msgspec.json.encode(events)
    headers = {**key["h"], "Content-Type": "application/json"}
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return router.post(f"/v1/ingest/replays/{replay_id}/chunks/{index}",
                       params={"session_id": str(session_id)}, content=body, headers=headers)


def _upload(router: httpx.Client, key: dict[str, Any], replay_id: Any, chunks: dict[int, list[dict[str, Any]]],
            *, gz: frozenset[int] = frozenset()) -> uuid.UUID:
    """Upload the chunks in the order given; returns the session they record."""
    session_id = uuid7()
    for index, events in chunks.items():
        r = _chunk(router, key, replay_id, index, session_id, events, gz=index in gz)
        assert r.status_code == 201, r.text
    return session_id


def _db(topo: dict[str, Any], region: str) -> str:
    return str(topo["cells"][region]["database_url"])


def _object_path(topo: dict[str, Any], region: str, key: str) -> Path:
    return Path(urlparse(topo["cells"][region]["object_store"]).path) / key


def _same_time(got: str, ms: int) -> bool:
    return datetime.fromisoformat(got) == datetime.fromtimestamp(ms / 1000, tz=UTC)


def _until(what: Callable[[], Any], timeout: float = 60, every: float = 0.1) -> Any:
    """Poll `what` until it returns something truthy; fail after `timeout` seconds."""
    return until(what, timeout, every=every)


def _settled(router: httpx.Client, h: dict[str, str], pid: str, replay_id: Any,
             timeout: float = 60) -> dict[str, Any]:
    """The replay once processing has decided (`ready` or `failed`)."""
    def done() -> dict[str, Any] | None:
        r = router.get(f"/v1/projects/{pid}/replays/{replay_id}", headers=h)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["status"] in ("ready", "failed") else None
    settled: dict[str, Any] = _until(done, timeout)
    return settled


def _jobs_complete(topo: dict[str, Any], region: str, outbox_ids: list[int]) -> bool:
    """Whether the worker finished every `replays.process` job relayed from these outbox rows."""
    async def run() -> bool:
        queue = Queue.from_url(topo["cells"][region]["redis_url"], name=f"relay-{region}")
        try:
            jobs = await queue.jobs(f"outbox:{i}:replays.process" for i in outbox_ids)
        finally:
            await queue.disconnect()
        return all(j is not None and j.status == Status.COMPLETE for j in jobs)
    return asyncio.run(run())


def _enqueue(topo: dict[str, Any], region: str, replay_id: Any, times: int, *, to_processing: bool) -> list[int]:
    """Deliver `replay.finished` `times` times in one transaction, as duplicated deliveries would."""
    replay = ("UPDATE replays SET status = 'processing' WHERE id = $1 RETURNING project_id" if to_processing
              else "SELECT project_id FROM replays WHERE id = $1")  # leaves the row untouched
    rows = sql(_db(topo, region),
               f"""WITH r AS ({replay})
                   INSERT INTO outbox (project_id, kind, payload)
                   SELECT r.project_id, 'replay.finished', jsonb_build_object('replay_id', $1::text)
                     FROM r, generate_series(1, $2) RETURNING id""", replay_id, times)
    assert len(rows) == times
    return [r["id"] for r in rows]


def _row(topo: dict[str, Any], region: str, replay_id: Any) -> dict[str, Any]:
    [row] = sql(_db(topo, region), """SELECT status::text, event_count, processed_at, failure_reason, chunks,
                                             xmin::text AS version FROM replays WHERE id = $1""", replay_id)
    return dict(row)


def test_finish_processes_the_replay_to_ready(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    ingest, read = admin.key(project, ["ingest"]), admin.key(project, ["read"])
    replay_id = uuid7()
    c0 = _events(T0 + 7, 5, tag="a")                      # T0+7 … T0+47
    c1 = _events(T0 + 23, 3, step=20, tag="b")[::-1]      # overlaps chunk 0, sent out of time order
    c2 = _events(T0 + 1000, 4, step=111, tag="c")         # … T0+1333, sent first and gzipped
    session_id = _upload(router, ingest, replay_id, {2: c2, 0: c0, 1: c1}, gz=frozenset({2}))

    done = router.post(f"/v1/ingest/replays/{replay_id}/finish", headers=ingest["h"])
    assert done.status_code == 202, done.text
    assert done.json()["status"] in ("processing", "ready")  # the worker may already be done
    replay = _settled(router, read["h"], pid, replay_id)
    assert replay["status"] == "ready", replay
    assert replay["event_count"] == 12 and replay["chunk_count"] == 3
    assert replay["duration"] == 1333 - 7
    assert _same_time(replay["started_at"], T0 + 7) and _same_time(replay["ended_at"], T0 + 1333)
    assert replay["failure_reason"] is None
    assert [(c["index"], c["eventCount"], c["startTime"], c["endTime"]) for c in replay["chunks"]] == [
        (0, 5, T0 + 7, T0 + 47), (1, 3, T0 + 23, T0 + 63), (2, 4, T0 + 1000, T0 + 1333)]
    row = _row(topo, "eu-west", replay_id)
    assert row["processed_at"] is not None and row["failure_reason"] is None

    # The stream: every event as sent, in time order across the overlapping chunks.
    events = router.get(f"/v1/projects/{pid}/replays/{replay_id}/events", headers=read["h"])
    assert events.status_code == 200 and events.headers["content-type"].startswith("application/json")
    assert events.json() == sorted(c0 + c1 + c2, key=lambda e: e["timestamp"])

    listed = router.get(f"/v1/projects/{pid}/replays", params={"status": "ready"}, headers=read["h"]).json()
    assert [r["id"] for r in listed["data"]] == [str(replay_id)]
    # Done is done: no more chunks, and finishing again queues nothing.
    late = problem(_chunk(router, ingest, replay_id, 3, session_id, _events(T0 + 2000, 1)), 409)
    assert late["detail"] == "the replay is ready: it takes no more chunks"
    again = router.post(f"/v1/ingest/replays/{replay_id}/finish", headers=ingest["h"])
    assert again.status_code == 202 and again.json()["status"] == "ready"
    jobs = sql(_db(topo, "eu-west"), "SELECT count(*) AS n FROM outbox WHERE kind = 'replay.finished' "
                                     "AND payload->>'replay_id' = $1", str(replay_id))
    assert jobs[0]["n"] == 1
    # Nothing of this happened in the other region.
    assert not sql(_db(topo, "us-west"), "SELECT 1 FROM replays WHERE id = $1", replay_id)


def test_a_missing_chunk_index_fails_the_replay(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    replay_id = uuid7()
    _upload(router, ingest, replay_id, {0: _events(T0, 3), 2: _events(T0 + 100, 3), 3: _events(T0 + 200, 1)})
    assert router.post(f"/v1/ingest/replays/{replay_id}/finish", headers=ingest["h"]).status_code == 202
    replay = _settled(router, admin.h, pid, replay_id)
    assert replay["status"] == "failed"
    assert replay["failure_reason"] == ("missing chunk 1: chunk indexes must run from 0 without gaps "
                                        "(3 uploaded, the highest is 3)")
    # The figures ingest indexed are left as they were; the stream is refused with the reason.
    assert replay["event_count"] == 7 and replay["chunk_count"] == 3
    refused = problem(router.get(f"/v1/projects/{pid}/replays/{replay_id}/events", headers=admin.h), 409)
    assert refused["detail"] == f"the replay failed processing: {replay['failure_reason']}"
    failed = router.get(f"/v1/projects/{pid}/replays", params={"status": "failed"}, headers=admin.h).json()
    assert [(r["id"], r["failure_reason"]) for r in failed["data"]] == [(str(replay_id), replay["failure_reason"])]


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda p: p.write_bytes(b"this is not gzip"), "corrupt chunk 1: the object is not valid gzip"),
    (lambda p: p.write_bytes(p.read_bytes()[:-9]), "corrupt chunk 1: the object is truncated"),
    (lambda p: p.write_bytes(gzip.compress(b'[{"type": 3, "timestamp": 5}, {"type": 2}]')),
     "corrupt chunk 1: expected a number of milliseconds since the epoch (at /1/timestamp)"),
    (lambda p: p.write_bytes(gzip.compress(b'{"not": "an array"}')),
     "corrupt chunk 1: Expected `array`, got `object` (at /)"),
    (lambda p: p.unlink(), "missing chunk 1: its object is not in storage"),
])
def test_a_damaged_chunk_object_fails_the_replay(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                                 damage: Callable[[Path], Any], reason: str) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    replay_id = uuid7()
    _upload(router, ingest, replay_id, {0: _events(T0, 3), 1: _events(T0 + 100, 30), 2: _events(T0 + 900, 2)})
    damage(_object_path(topo, "us-west", f"projects/{pid}/replays/{replay_id}/chunks/000001.json.gz"))
    assert router.post(f"/v1/ingest/replays/{replay_id}/finish", headers=ingest["h"]).status_code == 202
    replay = _settled(router, admin.h, pid, replay_id)
    assert (replay["status"], replay["failure_reason"]) == ("failed", reason)
    problem(router.get(f"/v1/projects/{pid}/replays/{replay_id}/events", headers=admin.h), 409)


def test_a_valid_object_out_of_order_is_rewritten_and_the_index_corrected(
        router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    replay_id = uuid7()
    c0, c1 = _events(T0, 3, tag="a"), _events(T0 + 100, 2, tag="b")
    _upload(router, ingest, replay_id, {0: c0, 1: c1})
    # Chunk 1's object now holds other (valid) events, out of time order: the index no longer describes it.
    other = _events(T0 + 5, 6, step=50, tag="x")
    path = _object_path(topo, "us-west", f"projects/{pid}/replays/{replay_id}/chunks/000001.json.gz")
    path.write_bytes(gzip.compress(msgspec.json.encode(other[::-1])))
    assert router.post(f"/v1/ingest/replays/{replay_id}/finish", headers=ingest["h"]).status_code == 202
    replay = _settled(router, admin.h, pid, replay_id)
    assert replay["status"] == "ready", replay
    assert replay["event_count"] == 9 and replay["duration"] == 255
    assert replay["chunks"][1] | {"storageKey": None} == {"index": 1, "storageKey": None, "eventCount": 6,
                                                          "startTime": T0 + 5, "endTime": T0 + 255}
    assert msgspec.json.decode(gzip.decompress(path.read_bytes())) == other  # stored sorted, as ingest would
    events = router.get(f"/v1/projects/{pid}/replays/{replay_id}/events", headers=admin.h).json()
    assert [e["data"]["tag"] for e in events] == ["a0", "x0", "a1", "a2", "x1", "x2", "x3", "x4", "x5"]


def test_duplicate_and_concurrent_deliveries_change_nothing_more(router: httpx.Client, admin: Admin,
                                                                 topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    good, bad = uuid7(), uuid7()
    _upload(router, ingest, good, {1: _events(T0 + 500, 4), 0: _events(T0, 4)})
    _upload(router, ingest, bad, {1: _events(T0, 4)})
    # Three deliveries of the same job at once, for each replay (as a retry after a lost ack would).
    ids = _enqueue(topo, "eu-west", good, 3, to_processing=True) + _enqueue(topo, "eu-west", bad, 3,
                                                                             to_processing=True)
    _until(lambda: _jobs_complete(topo, "eu-west", ids))
    ready = _row(topo, "eu-west", good)
    failed = _row(topo, "eu-west", bad)
    assert (ready["status"], ready["event_count"], ready["failure_reason"]) == ("ready", 8, None)
    assert (failed["status"], failed["failure_reason"]) == (
        "failed", "missing chunk 0: chunk indexes must run from 0 without gaps (1 uploaded, the highest is 1)")

    # Delivered again later: the rows are not even rewritten (same row version, same processed_at).
    more = _enqueue(topo, "eu-west", good, 2, to_processing=False) + _enqueue(topo, "eu-west", bad, 2,
                                                                              to_processing=False)
    _until(lambda: _jobs_complete(topo, "eu-west", more))
    assert _row(topo, "eu-west", good) == ready
    assert _row(topo, "eu-west", bad) == failed
    replay = router.get(f"/v1/projects/{pid}/replays/{good}", headers=admin.h).json()
    assert replay["duration"] == 530 and _same_time(replay["ended_at"], T0 + 530)


def test_an_idle_replay_is_closed_only_after_the_timeout(router: httpx.Client, admin: Admin,
                                                         topo: dict[str, Any]) -> None:
    """The session stack's timeout is the default (30 min): a replay quiet for an hour closes, a fresh one not."""
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    old, fresh = uuid7(), uuid7()
    _upload(router, ingest, old, {0: _events(T0, 2)})
    _upload(router, ingest, fresh, {0: _events(T0, 2)})
    sql(_db(topo, "us-west"), "UPDATE replays SET last_chunk_at = now() - interval '1 hour' WHERE id = $1", old)
    closed = _settled(router, admin.h, pid, old)
    assert closed["status"] == "ready" and closed["event_count"] == 2
    [job] = sql(_db(topo, "us-west"), "SELECT payload FROM outbox WHERE kind = 'replay.finished' "
                                      "AND payload->>'replay_id' = $1", str(old))
    assert msgspec.json.decode(job["payload"]) == {"replay_id": str(old), "idle": True}
    # The sweep that closed `old` saw `fresh` too and left it recording.
    assert router.get(f"/v1/projects/{pid}/replays/{fresh}", headers=admin.h).json()["status"] == "recording"
    assert _chunk(router, ingest, fresh, 1, _row_session(topo, fresh), _events(T0 + 50, 1)).status_code == 201


def _row_session(topo: dict[str, Any], replay_id: Any) -> uuid.UUID:
    [row] = sql(_db(topo, "us-west"), "SELECT session_id FROM replays WHERE id = $1", replay_id)
    session: uuid.UUID = row["session_id"]
    return session


@pytest.fixture(scope="module")
def quick(pg: StorePostgres, scratch: Path) -> Iterator[dict[str, Any]]:
    """A private topology whose cells close replays after IDLE_TIMEOUT seconds without a chunk."""
    stack = Stack(pg, scratch, "replay_idle", cell_env={"RELAY_REPLAY_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT)})
    router = httpx.Client(base_url=stack.dev.topology["router"]["url"], timeout=30, trust_env=False)
    try:
        yield {"stack": stack, "router": router, "admin": Admin(router), "topo": stack.dev.topology}
    finally:
        router.close()
        stack.close()


def test_replays_never_finished_are_closed_after_the_idle_timeout(quick: dict[str, Any]) -> None:
    router, admin, topo = quick["router"], quick["admin"], quick["topo"]
    project = admin.project("eu-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])
    whole, holed = uuid7(), uuid7()
    # One chunk each, so no pause between uploads can close a replay half-sent.
    events = _events(T0 + 3, 6, step=70)
    whole_session = _upload(router, ingest, whole, {0: events}, gz=frozenset({0}))
    _upload(router, ingest, holed, {1: _events(T0, 2)})
    # No `finish` is ever sent.
    closed = _settled(router, admin.h, pid, whole)
    assert (closed["status"], closed["event_count"], closed["duration"]) == ("ready", 6, 350)
    assert _same_time(closed["started_at"], T0 + 3) and _same_time(closed["ended_at"], T0 + 353)
    assert router.get(f"/v1/projects/{pid}/replays/{whole}/events", headers=admin.h).json() == events
    failed = _settled(router, admin.h, pid, holed)
    assert failed["status"] == "failed" and (failed["failure_reason"] or "").startswith("missing chunk 0:")
    [row] = sql(_db(topo, "eu-west"), "SELECT last_chunk_at, processed_at FROM replays WHERE id = $1", whole)
    assert (row["processed_at"] - row["last_chunk_at"]).total_seconds() >= IDLE_TIMEOUT
    # Closed means closed: a late chunk is refused, a late `finish` queues nothing.
    late_chunk = problem(_chunk(router, ingest, whole, 1, whole_session, _events(T0 + 900, 1)), 409)
    assert late_chunk["detail"] == "the replay is ready: it takes no more chunks"
    late = router.post(f"/v1/ingest/replays/{whole}/finish", headers=ingest["h"])
    assert late.status_code == 202 and late.json()["status"] == "ready"
    [n] = sql(_db(topo, "eu-west"), "SELECT count(*) AS n FROM outbox WHERE kind = 'replay.finished' "
                                    "AND payload->>'replay_id' = $1", str(whole))
    assert n["n"] == 1
