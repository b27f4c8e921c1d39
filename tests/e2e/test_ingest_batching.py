"""Group commit of ingest: requests that share a transaction are each answered as if alone.

The writer is driven directly (against the us-west cell's database of the running stack) where a test needs
requests to land in one batch for certain; through the router where concurrency is enough.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from typing import Any

import asyncpg
import httpx

from cell.interactions.writer import Outcome, Pending, Writer
from cell.users import Claim, EndUserIn
from common.ids import uuid7
from common.pg import create_pool
from tests.conftest import Admin, problem, sql


def _item(project_id: str, *, id: uuid.UUID | None = None, session_id: uuid.UUID | None = None,
          user: EndUserIn | None = None, text: str = "it broke", traceparent: str | None = None) -> Pending:
    return Pending({"id": id or uuid7(), "project_id": uuid.UUID(project_id), "type": "bug", "source": "sdk",
                    "user_id": None, "session_id": session_id, "content_text": text, "content": {"text": text},
                    "severity": "high", "tags": ["batch"], "technical_context": None, "privacy_scope": None},
                   Claim(user, verified=False, checked=False) if user else None,
                   ([{"level": "error", "message": text}], None, None), traceparent)


def _in_one_batch(dsn: str, make: Any) -> list[Outcome | BaseException]:
    """Build items with `make()` and store them all in the same turn of the loop: one batch."""

    async def run() -> list[Outcome | BaseException]:
        pool = await create_pool(dsn, 4)
        try:
            writer = Writer(pool, "us-west")
            items = make()
            return list(await asyncio.gather(*(writer.store(i) for i in items), return_exceptions=True))
        finally:
            await pool.close()

    return asyncio.run(run())


def test_one_batch_answers_each_request_as_its_own_transaction(router: httpx.Client, admin: Admin,
                                                                topo: dict[str, Any]) -> None:
    dsn = topo["cells"]["us-west"]["database_url"]
    p, other = admin.project("us-west"), admin.project("us-west")
    key, other_key = admin.key(p, ["ingest"]), admin.key(other, ["ingest"])
    stored_before = router.post("/v1/ingest/interactions", headers=key["h"],
                                json={"type": "bug", "content": {"text": "earlier"}}).json()
    others = router.post("/v1/ingest/interactions", headers=other_key["h"],
                         json={"type": "bug", "content": {"text": "theirs"}, "session_id": str(uuid7())}).json()
    session, twice = uuid7(), uuid7()
    traces = [f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01" for _ in range(2)]
    out = _in_one_batch(dsn, lambda: [
        _item(p["id"], session_id=session, user=EndUserIn("u-7", email="a@example.com"), traceparent=traces[0]),
        _item(p["id"], session_id=session, user=EndUserIn("u-7", name="Ann", traits={"plan": "pro"})),
        _item(p["id"], session_id=uuid.UUID(others["session_id"]), user=EndUserIn("u-never")),
        _item(p["id"], id=twice, traceparent=traces[1]),
        _item(p["id"], id=twice, text="the retry"),
        _item(p["id"], id=uuid.UUID(stored_before["id"])),
        _item(p["id"], id=uuid.UUID(others["id"])),
    ])
    assert all(isinstance(o, Outcome) for o in out), out
    got = [o.status for o in out if isinstance(o, Outcome)]
    assert got == [201, 201, 422, 201, 200, 200, 409], got
    rows = [o.row for o in out if isinstance(o, Outcome)]
    assert rows[4] is not None and rows[4]["id"] == twice and rows[4]["content"] == {"text": "it broke"}
    assert rows[5] is not None and rows[5]["content"] == {"text": "earlier"}
    new = [r["id"] for r in rows[:2] + rows[3:4] if r is not None]
    # One transaction wrote them all (one xmin), each with its logs and its own outbox row and trace.
    assert len(sql(dsn, "SELECT DISTINCT xmin::text FROM interactions WHERE id = ANY($1::uuid[])", new)) == 1
    assert sql(dsn, "SELECT count(*) AS n FROM interaction_logs WHERE interaction_id = ANY($1::uuid[])",
               new)[0]["n"] == 3
    jobs = sql(dsn, "SELECT payload->>'interaction_id' AS id, traceparent FROM outbox WHERE kind = "
               "'interaction.created' AND payload->>'interaction_id' = ANY($1::text[])", [str(i) for i in new])
    assert sorted((j["id"], j["traceparent"]) for j in jobs) == sorted(
        [(str(new[0]), traces[0]), (str(new[1]), None), (str(twice), traces[1])])
    # The user was upserted once with both requests' fields, the session counts both interactions.
    users = sql(dsn, "SELECT id, email, name, traits FROM end_users WHERE project_id = $1", uuid.UUID(p["id"]))
    assert [(u["email"], u["name"], u["traits"]) for u in users] == [("a@example.com", "Ann", '{"plan": "pro"}')]
    assert rows[0] is not None and rows[1] is not None and rows[0]["user_id"] == rows[1]["user_id"] == users[0]["id"]
    s = sql(dsn, "SELECT project_id, user_id, interaction_count FROM sessions WHERE id = $1", session)[0]
    assert (s["project_id"], s["user_id"], s["interaction_count"]) == (uuid.UUID(p["id"]), users[0]["id"], 2)
    # The refused and the repeated requests wrote nothing: no user, no count on the other project's session.
    theirs = sql(dsn, "SELECT interaction_count FROM sessions WHERE id = $1", uuid.UUID(others["session_id"]))
    assert theirs[0]["interaction_count"] == 1


def test_a_row_postgres_refuses_fails_its_own_request_only(admin: Admin, topo: dict[str, Any]) -> None:
    dsn = topo["cells"]["us-west"]["database_url"]
    p = admin.project("us-west")
    out = _in_one_batch(dsn, lambda: [_item(p["id"]), _item(p["id"], text="nul \x00 inside"), _item(p["id"])])
    assert isinstance(out[1], asyncpg.PostgresError), out
    assert [o.status for o in (out[0], out[2]) if isinstance(o, Outcome)] == [201, 201], out
    assert sql(dsn, "SELECT count(*) AS n FROM interactions WHERE project_id = $1", uuid.UUID(p["id"]))[0]["n"] == 2


def test_concurrent_ingest_with_one_foreign_session(router: httpx.Client, admin: Admin,
                                                    topo: dict[str, Any]) -> None:
    requests = 16
    p, other = admin.project("us-west"), admin.project("us-west")
    key, other_key = admin.key(p, ["ingest"]), admin.key(other, ["ingest"])
    foreign = str(uuid7())
    r = router.post("/v1/ingest/interactions", headers=other_key["h"],
                    json={"type": "bug", "content": {"text": "x"}, "session_id": foreign})
    assert r.status_code == 201, r.text
    session = str(uuid7())

    def post(i: int) -> httpx.Response:
        body: dict[str, Any] = {"type": "bug", "content": {"text": f"report {i}"},
                                "session_id": foreign if i == 5 else session,
                                "user": {"external_id": f"user-{i}"}}
        return router.post("/v1/ingest/interactions", headers=key["h"], json=body)

    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(post, range(requests)))
    assert [a.status_code for a in answers if a is not answers[5]] == [201] * (requests - 1)
    assert "session_id" in problem(answers[5], 422)["detail"]
    dsn = topo["cells"]["us-west"]["database_url"]
    assert sql(dsn, "SELECT interaction_count FROM sessions WHERE id = $1",
               uuid.UUID(session))[0]["interaction_count"] == requests - 1
    names = {r["external_user_id"] for r in sql(dsn, "SELECT external_user_id FROM end_users WHERE project_id = $1",
                                                uuid.UUID(p["id"]))}
    assert names == {f"user-{i}" for i in range(requests) if i != 5}


def test_the_same_id_from_two_processes_at_once_is_stored_once(admin: Admin, topo: dict[str, Any]) -> None:
    dsn = topo["cells"]["us-west"]["database_url"]
    p = admin.project("us-west")
    session, twice = uuid7(), uuid7()

    async def run() -> list[Outcome]:
        pools = [await create_pool(dsn, 2) for _ in range(2)]
        try:
            writers = [Writer(pool, "us-west") for pool in pools]  # as two API processes
            return list(await asyncio.gather(*(w.store(_item(p["id"], id=twice, session_id=session,
                                                             user=EndUserIn("u-1"))) for w in writers)))
        finally:
            for pool in pools:
                await pool.close()

    out = asyncio.run(run())
    assert sorted(o.status for o in out) == [200, 201], out
    assert out[0].row is not None and out[1].row is not None and out[0].row["id"] == out[1].row["id"] == twice
    assert sql(dsn, "SELECT count(*) AS n FROM outbox WHERE payload->>'interaction_id' = $1", str(twice))[0]["n"] == 1
    assert sql(dsn, "SELECT count(*) AS n FROM interaction_logs WHERE interaction_id = $1", twice)[0]["n"] == 1
    assert sql(dsn, "SELECT interaction_count FROM sessions WHERE id = $1", session)[0]["interaction_count"] == 1


def test_a_flusher_that_finished_but_is_not_yet_forgotten_does_not_strand_a_request(
        admin: Admin, topo: dict[str, Any]) -> None:
    """Between a flusher's last look at an empty queue and its done callback, a request may arrive: it must
    get a flusher of its own, not wait forever for one that has finished."""
    dsn = topo["cells"]["us-west"]["database_url"]
    p = admin.project("us-west")

    async def run() -> Outcome:
        pool = await create_pool(dsn, 2)
        try:
            writer = Writer(pool, "us-west", in_flight=1)
            finished = asyncio.get_running_loop().create_future()
            finished.set_result(None)
            writer._flushers.add(asyncio.ensure_future(finished))  # done, its discard not yet run
            return await asyncio.wait_for(writer.store(_item(p["id"])), 10)
        finally:
            await pool.close()

    assert asyncio.run(run()).status == 201
