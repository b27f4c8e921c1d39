"""The reliable queue against a real Redis and Postgres, with the worker running in this process.

What the end-to-end tests cannot pin down quickly: every way a job's last attempt can fail (an exception, a
timeout, a dead worker) ends in `dead_letters`; a retry runs the one consumer that failed; jobs the queue lost
are relayed again; a dead worker's job is re-run after heartbeat + sweep; counters reconciliation never loses
a concurrent increment and never writes a row that is right.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from saq.job import Status
from saq.utils import now

from cell.jobs import Job
from cell.maintenance import counters, dead_letters
from cell.maintenance.retention import retention_days
from cell.settings import CellSettings
from cell.worker import SWEPT, CellQueue, Timing, _Outage, relay_outbox, rerelay_unfinished, settler, work
from common.ids import uuid7
from common.pg import create_pool
from relay.embedded import RedisServer
from tests.services import StorePostgres, redis_server

# saq calls redis-py's SETEX, which redis-py 8 marks deprecated; in this process warnings are errors.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")

FAST = Timing(heartbeat=2, sweep=1, stale=1, recheck=0.5, idle=0.05)


@pytest.fixture(scope="module")
def dsn(pg: StorePostgres) -> str:
    return pg.migrated("jobs_unit", "cell")


@pytest.fixture(scope="module")
def redis(scratch: Path) -> Iterator[RedisServer]:
    server = redis_server(scratch / "jobs-unit", "eu-west")
    yield server
    server.stop()


@pytest.fixture
def settings(dsn: str, redis: RedisServer, tmp_path: Path) -> CellSettings:
    return CellSettings(region="eu-west", database_url=dsn, redis_url=redis.url,
                        object_store=(tmp_path / "objects").as_uri(), hop_secret="h" * 32, secret_key="k" * 32,
                        key_pepper="p" * 32, db_pool_size=6)


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(dsn, 8)
    yield p
    await p.close()


async def _project(pool: asyncpg.Pool) -> uuid.UUID:
    pid = uuid7()
    await pool.execute("INSERT INTO projects (id, name, region, secret) VALUES ($1, 'p', 'eu-west', '\\x00')", pid)
    return pid


async def _outbox(pool: asyncpg.Pool, pid: uuid.UUID, kind: str, payload: dict[str, Any]) -> int:
    outbox_id: int = await pool.fetchval(
        "INSERT INTO outbox (project_id, kind, payload) VALUES ($1, $2, $3) RETURNING id", pid, kind, payload)
    return outbox_id


async def _until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


@contextlib.asynccontextmanager
async def running(settings: CellSettings, jobs: dict[str, Job], timing: Timing = FAST) -> AsyncIterator[None]:
    """The worker process's main coroutine, with these jobs and no crons."""
    stop = asyncio.Event()
    task = asyncio.create_task(work(settings, stop, jobs=jobs, crons=[], timing=timing))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _registry(*jobs: Job) -> dict[str, Job]:
    return {j.id: j for j in jobs}


async def test_an_exception_and_a_timeout_both_end_in_dead_letters(settings: CellSettings,
                                                                     pool: asyncpg.Pool) -> None:
    calls: dict[str, int] = {"ok": 0, "boom": 0, "slow": 0}

    async def ok(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        calls["ok"] += 1

    async def boom(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        calls["boom"] += 1
        raise RuntimeError("boom: the payload names nothing")

    async def slow(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        calls["slow"] += 1
        await asyncio.sleep(30)

    kind = f"t{uuid7().hex[:8]}.happened"
    jobs = _registry(Job(kind, ok, name=f"{kind}.ok"),
                     Job(kind, boom, retries=3, retry_delay=0.05, name=f"{kind}.boom"),
                     Job(kind, slow, timeout=1, retries=2, retry_delay=0.05, name=f"{kind}.slow"))
    pid = await _project(pool)
    outbox_id = await _outbox(pool, pid, kind, {"thing": 1})
    async with running(settings, jobs):
        async def both() -> list[asyncpg.Record] | None:
            rows = await pool.fetch("SELECT * FROM dead_letters WHERE outbox_id = $1 ORDER BY job", outbox_id)
            return rows if len(rows) == 2 else None

        letters = await _until(both, 30)
        row = await pool.fetchrow("SELECT dispatched_at, pending_jobs FROM outbox WHERE id = $1", outbox_id)
    boom_letter, slow_letter = letters
    assert (boom_letter["job"], boom_letter["kind"], boom_letter["attempts"]) == (f"{kind}.boom", kind, 3)
    assert "RuntimeError: boom: the payload names nothing" in boom_letter["error"]
    assert (slow_letter["job"], slow_letter["attempts"]) == (f"{kind}.slow", 2)
    assert "TimeoutError" in slow_letter["error"]
    for letter in letters:
        assert letter["project_id"] == pid and letter["payload"] == {"thing": 1} and letter["retried_at"] is None
    # Every attempt ran; the consumer that worked ran once; nothing is left pending.
    assert calls == {"ok": 1, "boom": 3, "slow": 2}
    assert row["dispatched_at"] is not None and row["pending_jobs"] == []


async def test_a_retry_reruns_only_the_failed_consumer_under_its_original_key(settings: CellSettings,
                                                                              pool: asyncpg.Pool) -> None:
    calls: dict[str, int] = {"ok": 0, "flaky": 0}
    broken = True
    keys: list[str] = []

    async def ok(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        calls["ok"] += 1

    async def flaky(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        calls["flaky"] += 1
        keys.append(ctx["job"].key)
        if broken:
            raise ConnectionError("the provider is down")

    kind = f"t{uuid7().hex[:8]}.happened"
    jobs = _registry(Job(kind, ok, name=f"{kind}.ok"), Job(kind, flaky, retries=2, retry_delay=0.05,
                                                             name=f"{kind}.flaky"))
    pid = await _project(pool)
    outbox_id = await _outbox(pool, pid, kind, {"n": 1})
    async with running(settings, jobs):
        letter_id = await _until(lambda: pool.fetchval("SELECT id FROM dead_letters WHERE outbox_id = $1", outbox_id))
        assert calls == {"ok": 1, "flaky": 2}
        broken = False
        async with pool.acquire() as conn:
            retry_id = await dead_letters.retry(conn, letter_id)
            with pytest.raises(dead_letters.AlreadyRetried):
                await dead_letters.retry(conn, letter_id)
            assert await dead_letters.retry(conn, uuid7()) is None

        async def finished() -> bool:
            return await pool.fetchval("SELECT pending_jobs = '{}' FROM outbox WHERE id = $1", retry_id) is True

        await _until(finished)
    assert calls == {"ok": 1, "flaky": 3}
    assert keys == [f"outbox:{outbox_id}:{kind}.flaky"] * 3
    row = await pool.fetchrow("SELECT only_job, retry_of FROM outbox WHERE id = $1", retry_id)
    assert (row["only_job"], row["retry_of"]) == (f"{kind}.flaky", outbox_id)
    letter = await pool.fetchrow("SELECT retried_at, retry_outbox_id FROM dead_letters WHERE id = $1", letter_id)
    assert letter["retried_at"] is not None and letter["retry_outbox_id"] == retry_id
    # The retry worked: no new dead letter.
    assert await pool.fetchval("SELECT count(*) FROM dead_letters WHERE outbox_id = $1", retry_id) == 0
    assert [d.id for d in await dead_letters.listing(pool) if d.id == letter_id] == []
    assert [d.id for d in await dead_letters.listing(pool, include_retried=True) if d.id == letter_id] == [letter_id]


async def test_jobs_the_queue_lost_are_relayed_again(settings: CellSettings, pool: asyncpg.Pool) -> None:
    ran: list[dict[str, Any]] = []

    async def handler(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        ran.append(payload)

    kind = f"t{uuid7().hex[:8]}.happened"
    jobs = _registry(Job(kind, handler, name=f"{kind}.only"))
    pid = await _project(pool)
    outbox_id = await _outbox(pool, pid, kind, {"n": 7})
    redis = Redis.from_url(settings.redis_url)
    queue = CellQueue(redis, "relay-eu-west", settler(pool), _Outage())
    try:
        # Relayed while no worker runs; then Redis restarts empty (no persistence).
        assert await relay_outbox(pool, queue, jobs, FAST) >= 1
        assert await pool.fetchval("SELECT pending_jobs FROM outbox WHERE id = $1", outbox_id) == [f"{kind}.only"]
        assert await queue.job(f"outbox:{outbox_id}:{kind}.only") is not None
        await redis.flushall()
        await pool.execute("UPDATE outbox SET dispatched_at = now() - interval '1 hour' WHERE id = $1", outbox_id)
        # Once stale, the row's job is back on the queue; while the queue holds it, relaying again is a no-op.
        assert await rerelay_unfinished(pool, queue, jobs, FAST) >= 1
        await pool.execute("UPDATE outbox SET dispatched_at = now() - interval '1 hour' WHERE id = $1", outbox_id)
        assert await rerelay_unfinished(pool, queue, jobs, FAST) == 0
    finally:
        await queue.disconnect()
    async with running(settings, jobs):
        await _until(lambda: pool.fetchval("SELECT pending_jobs = '{}' FROM outbox WHERE id = $1", outbox_id))
    assert ran == [{"n": 7}]


async def _orphan(settings: CellSettings, pool: asyncpg.Pool, jobs: dict[str, Job], outbox_id: int,
                  key: str) -> None:
    """Leave the job as a worker that died mid-job would: taken off the queue, active, attempt counted."""
    queue = CellQueue(Redis.from_url(settings.redis_url), "relay-eu-west", settler(pool), _Outage())
    try:
        await relay_outbox(pool, queue, jobs, FAST)
        job = await queue.dequeue(timeout=5)
        while job is not None and job.key != key:  # another test's leftovers
            await job.retry(None)
            job = await queue.dequeue(timeout=5)
        assert job is not None
        job.started = now()
        job.attempts += 1
        await job.update(status=Status.ACTIVE)
    finally:
        await queue.disconnect()


async def test_a_dead_workers_job_is_run_again_after_heartbeat_and_sweep(settings: CellSettings,
                                                                          pool: asyncpg.Pool) -> None:
    ran: list[int] = []

    async def handler(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        ran.append(ctx["job"].attempts)

    kind = f"t{uuid7().hex[:8]}.happened"
    jobs = _registry(Job(kind, handler, timeout=3600, retries=3, retry_delay=0.05, name=f"{kind}.only"))
    pid = await _project(pool)
    outbox_id = await _outbox(pool, pid, kind, {})
    await _orphan(settings, pool, jobs, outbox_id, f"outbox:{outbox_id}:{kind}.only")
    started = time.monotonic()
    async with running(settings, jobs):
        await _until(lambda: pool.fetchval("SELECT pending_jobs = '{}' FROM outbox WHERE id = $1", outbox_id), 40)
    # Re-run once, as its second attempt, well before its one-hour timeout: heartbeat + sweep + saq's abort wait.
    assert ran == [2]
    assert time.monotonic() - started < FAST.heartbeat + FAST.sweep + 5 + 10


async def test_a_dead_worker_on_the_last_attempt_leaves_a_dead_letter(settings: CellSettings,
                                                                      pool: asyncpg.Pool) -> None:
    async def handler(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        raise AssertionError("never runs again: its one attempt was used")

    kind = f"t{uuid7().hex[:8]}.happened"
    jobs = _registry(Job(kind, handler, retries=1, name=f"{kind}.only"))
    pid = await _project(pool)
    outbox_id = await _outbox(pool, pid, kind, {"x": 1})
    await _orphan(settings, pool, jobs, outbox_id, f"outbox:{outbox_id}:{kind}.only")
    async with running(settings, jobs):
        letter = await _until(lambda: pool.fetchrow("SELECT * FROM dead_letters WHERE outbox_id = $1", outbox_id), 40)
    assert (letter["job"], letter["attempts"], letter["error"]) == (f"{kind}.only", 1, SWEPT)
    assert await pool.fetchval("SELECT pending_jobs FROM outbox WHERE id = $1", outbox_id) == []


async def test_reconcile_keeps_concurrent_increments_and_leaves_right_rows_alone(pool: asyncpg.Pool) -> None:
    pid = await _project(pool)
    drifted, right = uuid7(), uuid7()
    for item in (drifted, right):
        await pool.execute("INSERT INTO feedback_items (id, project_id, title) VALUES ($1, $2, 't')", item, pid)
    sessions = [uuid7() for _ in range(60)]
    await pool.executemany("INSERT INTO sessions (id, project_id) VALUES ($1, $2)", [(s, pid) for s in sessions])

    async def vote(item: uuid.UUID, session: uuid.UUID) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO feedback_votes (id, project_id, feedback_item_id, session_id)"
                               " VALUES ($1, $2, $3, $4)", uuid7(), pid, item, session)
            await asyncio.sleep(0.001)
            await conn.execute("UPDATE feedback_items SET vote_count = vote_count + 1 WHERE id = $1", item)

    for s in sessions[:3]:
        await vote(right, s)
    right_version = await pool.fetchval("SELECT xmin::text FROM feedback_items WHERE id = $1", right)
    await pool.execute("UPDATE feedback_items SET vote_count = 1000 WHERE id = $1", drifted)

    async def reconcile_often() -> list[dict[str, int]]:
        return [await counters.reconcile(pool, pid) for _ in range(15)]

    results, *_ = await asyncio.gather(reconcile_often(), *(vote(drifted, s) for s in sessions[3:]))
    await counters.reconcile(pool, pid)
    count = await pool.fetchval("SELECT count(*) FROM feedback_votes WHERE feedback_item_id = $1", drifted)
    assert count == len(sessions) - 3
    assert await pool.fetchval("SELECT vote_count FROM feedback_items WHERE id = $1", drifted) == count
    assert results[0] == {"feedback_items.vote_count": 1}
    # The right row was never written (its row version is the same), and a clean project changes nothing.
    assert await pool.fetchval("SELECT xmin::text FROM feedback_items WHERE id = $1", right) == right_version
    assert await counters.reconcile(pool, pid) == {}
    audit = await pool.fetch("SELECT actor_type::text, actor_id, meta FROM audit_logs WHERE project_id = $1"
                             " AND action = 'counters.repaired'", pid)
    assert audit and audit[0]["actor_type"] == "system" and audit[0]["meta"]["rows"]["feedback_items.vote_count"] >= 1


def test_retention_days_is_a_positive_whole_number_or_forever() -> None:
    assert [retention_days(v) for v in (30, 30.0, 1, 36500)] == [30, 30, 1, 36500]
    assert [retention_days(v) for v in (None, 0, -1, 36501, 1.5, "30", True, [30], {"d": 1})] == [None] * 9


def test_the_cli_finds_the_cells_it_addresses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import json

    from relay.jobs_cli import CliError, cells

    topology = {"cells": {"us-west": {"database_url": "postgresql://us"}, "eu-west": {"database_url": "postgresql://eu"}}}
    (tmp_path / "topology.json").write_text(json.dumps(topology))

    def ask(**given: Any) -> dict[str, str]:
        return cells(argparse.Namespace(**{"region": None, "state_dir": None, "database_url": None, **given}))

    monkeypatch.delenv("RELAY_DATABASE_URL", raising=False)
    monkeypatch.delenv("RELAY_REGION", raising=False)
    assert ask(state_dir=str(tmp_path)) == {"us-west": "postgresql://us", "eu-west": "postgresql://eu"}
    assert ask(state_dir=str(tmp_path), region="eu-west") == {"eu-west": "postgresql://eu"}
    with pytest.raises(CliError, match="no region 'mars'"):
        ask(state_dir=str(tmp_path), region="mars")
    with pytest.raises(CliError, match="no topology"):
        ask(state_dir=str(tmp_path / "nowhere"))
    # In a region's deployment its own database is the default; an explicit state dir or URL wins.
    monkeypatch.setenv("RELAY_DATABASE_URL", "postgresql://here")
    monkeypatch.setenv("RELAY_REGION", "eu-west")
    assert ask() == {"eu-west": "postgresql://here"}
    assert ask(state_dir=str(tmp_path), region="us-west") == {"us-west": "postgresql://us"}
    assert ask(database_url="postgresql://there", region="us-west") == {"us-west": "postgresql://there"}
