"""A cell's worker process: relays the outbox to the region's queue and runs its jobs.

Everything here touches only this cell's own stores. Outbox rows are relayed
to saq (on the cell's Redis) with the outbox id as the job key, so a relay
that repeats after a crash enqueues nothing twice; a row is marked dispatched
only after the enqueue succeeded, so a Redis outage delays jobs and loses none.
Kinds without a handler in this version stay pending in the outbox rather than
being dropped, and run once a worker that knows them is deployed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import asyncpg
import httpx
from redis.exceptions import RedisError
from saq import CronJob, Queue, Worker

from cell.jobs import registry
from cell.settings import CellSettings, from_env
from cell.storage import ObjectStore
from common import telemetry
from common.pg import create_pool

log = logging.getLogger("relay.worker")


async def reconcile_counters(ctx: dict[str, Any]) -> int:
    """Recompute `sessions.interaction_count` from the interactions themselves; repair drift."""
    pool: asyncpg.Pool = ctx["pool"]
    result: str = await pool.execute(
        """UPDATE sessions s SET interaction_count = c.n
             FROM (SELECT s2.id, count(i.id) AS n FROM sessions s2
                     LEFT JOIN interactions i ON i.project_id = s2.project_id AND i.session_id = s2.id
                    GROUP BY s2.id) c
            WHERE s.id = c.id AND s.interaction_count <> c.n""")
    repaired = int(result.split()[-1])
    if repaired:
        log.info("reconcile_counters repaired %d sessions", repaired)
    return repaired


JOBS, CRONS = registry()


async def dispatch(ctx: dict[str, Any], *, job: str, payload: dict[str, Any], **_: Any) -> None:
    """Run one consumer of one relayed outbox row."""
    await JOBS[job].handler(ctx, payload)


async def relay_outbox(pool: asyncpg.Pool, queue: Queue, batch: int = 200) -> int:
    """Move pending outbox rows with a known handler to the queue; return how many."""
    moved = 0
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT id, kind, payload FROM outbox
                WHERE dispatched_at IS NULL AND available_at <= now() AND kind = ANY($1::text[])
                ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED""", sorted({j.kind for j in JOBS.values()}), batch)
        for row in rows:
            for job in (j for j in JOBS.values() if j.kind == row["kind"]):
                await queue.enqueue("dispatch", key=f"outbox:{row['id']}:{job.id}", job=job.id, kind=row["kind"],
                                    payload=row["payload"], retries=job.retries, timeout=job.timeout)
            moved += 1
        if rows:
            await conn.execute("UPDATE outbox SET dispatched_at = now() WHERE id = ANY($1::bigint[])",
                               [r["id"] for r in rows])
    return moved


async def _relay_loop(pool: asyncpg.Pool, queue: Queue) -> None:
    while True:
        try:
            if await relay_outbox(pool, queue):
                continue
        except (TimeoutError, RedisError, OSError, asyncpg.PostgresError) as exc:
            log.warning("outbox relay paused (%s); rows stay pending", type(exc).__name__)
        await asyncio.sleep(0.5)


async def work(settings: CellSettings, stop: asyncio.Event) -> None:
    """Run the relay and the saq worker until `stop` is set."""
    pool = await create_pool(settings.database_url, 5, min_size=0)
    queue = Queue.from_url(settings.redis_url, name=f"relay-{settings.region}")
    http = httpx.AsyncClient(trust_env=False, timeout=10.0, follow_redirects=False)
    ctx_extra = {"pool": pool, "settings": settings, "store": ObjectStore(settings.object_store), "http": http}

    async def startup(ctx: dict[str, Any]) -> None:
        ctx.update(ctx_extra)

    # saq types its context as a closed TypedDict; ours carries the cell's pool and settings too.
    cron_jobs: list[Any] = [CronJob(reconcile_counters, cron="17 * * * *", timeout=300)]
    cron_jobs += [CronJob(c.function, cron=c.cron, timeout=c.timeout) for c in CRONS]
    functions: list[Any] = [dispatch, reconcile_counters, *(c.function for c in CRONS)]
    worker: Worker[Any] = Worker(queue, functions=functions, startup=startup, cron_jobs=cron_jobs,
                                 concurrency=10, shutdown_grace_period_s=1, dequeue_timeout=1)
    worker.SIGNALS = []  # this process owns SIGTERM/SIGINT: stop the relay and the worker together
    await queue.connect()
    tasks = [asyncio.create_task(worker.start()), asyncio.create_task(_relay_loop(pool, queue))]
    try:
        await stop.wait()
    finally:
        # Let running jobs finish (saq's own grace period would also wait out its idle timers).
        deadline = asyncio.get_running_loop().time() + 10
        while worker.job_task_contexts and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        await worker.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await queue.disconnect()
        await http.aclose()
        await pool.close()


def run_worker() -> int:
    """Entry point of `relay worker`: work until SIGTERM or SIGINT."""
    settings = from_env()
    telemetry.setup("worker", settings.region)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await work(settings, stop)

    try:
        asyncio.run(main())
    finally:
        telemetry.shutdown()
    return 0
