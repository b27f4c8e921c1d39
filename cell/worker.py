"""A cell's worker process: relays the outbox to the region's queue and runs its jobs, reliably.

Everything here touches only this cell's own stores. The guarantees, and what gives each:

- Nothing is lost between a commit and the queue: work is an outbox row written
  with the data. The relay puts each consumer of a row on saq (the cell's Redis)
  under the key `outbox:{id}:{consumer}`, so a relay that repeats after a crash
  enqueues nothing twice, and marks the row dispatched only for what was
  enqueued. While Redis is down, rows stay pending, ingest goes on, and the
  backlog drains when Redis returns (the worker rides out the outage quietly).
- Nothing is lost inside the queue either: a relayed row lists its unfinished
  consumers (`pending_jobs`); a job's outcome is written to Postgres before saq
  forgets it. A row whose jobs stay unfinished for `Timing.stale` seconds is
  relayed again: a no-op while saq still holds the job, a rescue when Redis lost
  it (a restart without persistence, a failover).
- At least once, so handlers are idempotent. Each attempt has a timeout; a
  failure is retried with exponential backoff (`Job.retries`, `retry_delay`,
  `retry_backoff`). Running jobs send a heartbeat; a job whose worker died (no
  heartbeat for `Timing.heartbeat` seconds) is re-queued by saq's sweep within
  heartbeat + sweep seconds, whatever its timeout.
- A job whose last attempt fails (an exception, a timeout, or a dead worker) is
  written to `dead_letters`, for `relay jobs dead` and `relay jobs retry`.

Kinds without a handler in this version stay pending in the outbox rather than
being dropped, and run once a worker that knows them is deployed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import CronJob, Worker
from saq.job import Job as SaqJob
from saq.job import Status
from saq.queue.redis import RedisQueue
from saq.types import PartialTimersDict
from saq.utils import now, seconds

from cell.jobs import Cron, Job, registry
from cell.maintenance import dead_letters
from cell.settings import CellSettings, from_env
from cell.storage import ObjectStore
from common import metrics, telemetry
from common.pg import create_pool

log = logging.getLogger("relay.worker")

# What a lost connection to Redis or Postgres looks like from here.
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
SWEPT = "lost: its worker stopped sending heartbeats (killed or stuck) or it ran past its timeout"


@dataclass(frozen=True)
class Timing:
    """How quickly the worker notices trouble."""

    heartbeat: int = 15
    """A running job touches its queue entry every heartbeat/3 s; with none for this long it counts as lost."""
    sweep: int = 5
    """How often the queue is swept for lost jobs (one worker per interval does it)."""
    stale: int = 300
    """A relayed row with jobs unfinished this long is relayed again (no-op while the queue holds them)."""
    recheck: float = 30.0
    """How often the relay looks for such rows."""
    idle: float = 0.5
    """How long the relay waits when the outbox is empty."""
    batch: int = 200
    """Outbox rows relayed per transaction."""


class _Outage:
    """Says once that Redis is unreachable and once that it is back, instead of once per attempt."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    def down(self, where: str, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = asyncio.get_running_loop().time()
            log.warning("queue unreachable (%s in %s); outbox rows stay pending until it returns",
                        type(exc).__name__, where)

    def up(self) -> None:
        if self.down_since is not None:
            gone = asyncio.get_running_loop().time() - self.down_since
            self.down_since = None
            log.info("queue reachable again after %.1f s; draining the outbox", gone)


Settle = Callable[[SaqJob, Status, str | None], Awaitable[None]]


# saq's sweep script: the active list and each job's data, read atomically, at most once per `lock` seconds
# across workers.
_SWEEP_LUA = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""


def lost(job: SaqJob) -> bool:
    """Whether an active job's worker is gone: no heartbeat for `heartbeat` seconds. A live worker enforces
    the job's timeout itself, so the timeout counts here only a grace period later (else the sweep and the
    worker would both handle the same timeout)."""
    current = now()
    grace = max(job.heartbeat, 5)
    return bool((job.timeout and seconds(current - job.started) > job.timeout + grace)
                or (job.heartbeat and seconds(current - job.touched) > job.heartbeat))


class CellQueue(RedisQueue):
    """saq's Redis queue, plus: a job's outcome goes to Postgres before Redis forgets it, and a lost
    connection makes the worker wait instead of spinning."""

    def __init__(self, redis: Redis, name: str, settle: Settle, outage: _Outage) -> None:
        super().__init__(redis, name=name, swept_error_message=SWEPT)
        self.settle = settle
        self.outage = outage
        self._sweep_script: Any = None
        self._suspects: set[bytes] = set()

    async def finish(self, job: SaqJob, status: Status, *, result: Any = None, error: str | None = None,
                     **kwargs: Any) -> None:
        await self.settle(job, status, error)
        await super().finish(job, status, result=result, error=error, **kwargs)

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> SaqJob | None:
        try:
            job: SaqJob | None = await super().dequeue(timeout, poll_interval)
        except REDIS_ERRORS as exc:
            self.outage.down("dequeue", exc)
            await asyncio.sleep(1)
            return None
        self.outage.up()
        return job

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        try:
            swept = await self._sweep_lost(lock, abort)
        except REDIS_ERRORS as exc:
            self.outage.down("sweep", exc)
            return []
        if swept:
            log.warning("re-queued %d lost job(s): %s", len(swept), ", ".join(swept))
        return swept

    async def _sweep_lost(self, lock: int, abort: float) -> list[str]:
        """saq's sweep, judging jobs by `lost`, and sparing a job that a worker has just dequeued: a dequeue
        moves the job to the active list a moment before the worker marks it active, so a job found still
        `queued` there is swept only if it is found so again by the next sweep."""
        if self._sweep_script is None:
            self._sweep_script = self.redis.register_script(_SWEEP_LUA)
        id_jobs = await self._sweep_script(keys=[self._sweep, self._active], args=[lock], client=self.redis)
        swept: list[str] = []
        suspects: set[bytes] = set()
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                swept.append(job_id.decode())
                continue
            if job.status == Status.QUEUED and job_id not in self._suspects:
                suspects.add(job_id)
                continue
            if job.status == Status.ACTIVE and not lost(job):
                continue
            swept.append(job_id.decode())
            await self.abort(job, error=self.swept_error_message)
            with contextlib.suppress(TimeoutError):
                await job.refresh(abort)  # a live worker, if any, confirms the abort
            if job.retryable:
                await self.retry(job, error=self.swept_error_message)
            else:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        self._suspects = suspects
        return swept


class CellWorker(Worker[Any]):
    """saq's worker, riding out a Redis outage: upkeep steps that cannot reach Redis wait for the next
    round instead of logging a traceback each second."""

    outage: _Outage

    async def process(self) -> bool:
        try:
            done: bool = await super().process()
        except REDIS_ERRORS as exc:  # a job's own bookkeeping failed: the sweep or the relay takes it over
            self.outage.down("process", exc)
            await asyncio.sleep(1)
            return False
        return done

    async def schedule(self, lock: int = 1) -> None:
        try:
            await super().schedule(lock)
        except REDIS_ERRORS as exc:
            self.outage.down("schedule", exc)
        else:
            self.outage.up()

    async def abort(self, abort_threshold: float) -> None:
        try:
            await super().abort(abort_threshold)
        except REDIS_ERRORS as exc:
            self.outage.down("abort", exc)

    async def worker_info(self, ttl: int = 60) -> Any:
        try:
            return await super().worker_info(ttl)
        except REDIS_ERRORS as exc:
            self.outage.down("worker_info", exc)
            return {}


@contextlib.asynccontextmanager
async def heartbeat(ctx: dict[str, Any]) -> AsyncIterator[None]:
    """Touch the running job's queue entry every heartbeat/3 s while the body runs, so the sweep can tell a
    live job from one whose worker died. (So a handler must not block the event loop that long: CPU-heavy
    work belongs in `asyncio.to_thread`.)"""
    job: SaqJob | None = ctx.get("job")

    async def beat() -> None:
        assert job is not None
        while True:
            await asyncio.sleep(job.heartbeat / 3)
            try:
                await job.update()
            except REDIS_ERRORS as exc:
                log.warning("heartbeat of %s missed: %s", job.key, type(exc).__name__)

    task = asyncio.create_task(beat()) if job is not None and job.heartbeat else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def dispatch(ctx: dict[str, Any], *, job: str, payload: dict[str, Any], project_id: str | None = None,
                   traceparent: str | None = None, **_: Any) -> None:
    """Run one consumer of one relayed outbox row, in the trace of the request that wrote the row."""
    jobs: dict[str, Job] = ctx["jobs"]
    spec = jobs.get(job)
    if spec is None:
        raise LookupError(f"no consumer named {job!r} in this version of the worker")
    started, ok = time.perf_counter(), False
    with telemetry.job_span(job, traceparent, ctx["settings"].region, project_id):
        try:
            async with heartbeat(ctx):
                await spec.handler(ctx, payload)
            ok = True
        finally:
            metrics.record_job(job, time.perf_counter() - started, ok)


def cron_function(cron: Cron) -> Callable[..., Awaitable[Any]]:
    """A cron job as saq runs it: named after the cron (saq keys a cron's runs by function name), with a
    heartbeat like every other job."""

    async def run(ctx: dict[str, Any], **_: Any) -> Any:
        started, ok = time.perf_counter(), False
        with telemetry.job_span(cron.name, None, ctx["settings"].region, None):
            try:
                async with heartbeat(ctx):
                    result = await cron.function(ctx)
                ok = True
                return result
            finally:
                metrics.record_job(cron.name, time.perf_counter() - started, ok)

    run.__name__ = run.__qualname__ = cron.name
    return run


def job_key(outbox_id: int, consumer: str) -> str:
    """The queue key of one consumer of one outbox row: the same on every relay, so repeats dedupe."""
    return f"outbox:{outbox_id}:{consumer}"


async def _enqueue(queue: CellQueue, spec: Job, row: asyncpg.Record, heartbeat_s: int) -> SaqJob | None:
    """Queue one consumer of a row; None when the queue already holds that job (queued, running or waiting
    for a retry)."""
    origin = row["retry_of"] or row["id"]
    project_id = row["project_id"]
    job: SaqJob | None = await queue.enqueue(
        "dispatch", key=job_key(origin, spec.id), job=spec.id, kind=row["kind"], payload=row["payload"],
        outbox_id=row["id"], project_id=str(project_id) if project_id is not None else None,
        traceparent=row["traceparent"],
        timeout=spec.timeout, retries=spec.retries, retry_delay=spec.retry_delay,
        retry_backoff=spec.retry_backoff, heartbeat=heartbeat_s)
    return job


async def relay_outbox(pool: asyncpg.Pool, queue: CellQueue, jobs: dict[str, Job], timing: Timing) -> int:
    """Move pending outbox rows with a known consumer to the queue; return how many rows.

    A row is marked dispatched, with its consumers as `pending_jobs`, only once all of them are on the
    queue; when Redis fails half way the rows enqueued so far are marked and the rest stay pending.
    """
    kinds = sorted({j.kind for j in jobs.values()})
    done: list[tuple[int, str]] = []
    failure: BaseException | None = None
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT id, project_id, kind, payload, only_job, retry_of, traceparent FROM outbox
                WHERE dispatched_at IS NULL AND available_at <= now()
                  AND CASE WHEN only_job IS NULL THEN kind = ANY($1::text[]) ELSE only_job = ANY($2::text[]) END
                ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED""", kinds, sorted(jobs), timing.batch)
        try:
            for row in rows:
                consumers = ([row["only_job"]] if row["only_job"]
                             else [j.id for j in jobs.values() if j.kind == row["kind"]])
                for name in consumers:
                    await _enqueue(queue, jobs[name], row, timing.heartbeat)
                done.append((row["id"], ",".join(consumers)))
        except REDIS_ERRORS as exc:
            failure = exc
        if done:
            await conn.execute(
                """UPDATE outbox o SET dispatched_at = now(), pending_jobs = string_to_array(d.jobs, ',')
                     FROM unnest($1::bigint[], $2::text[]) AS d(id, jobs) WHERE o.id = d.id""",
                [d[0] for d in done], [d[1] for d in done])
    if failure is not None:
        raise failure
    return len(done)


async def rerelay_unfinished(pool: asyncpg.Pool, queue: CellQueue, jobs: dict[str, Job], timing: Timing) -> int:
    """Enqueue again the jobs of rows relayed `timing.stale` seconds ago or more and still unfinished.

    saq refuses a key it still holds, so this only brings back jobs the queue lost; how many it brought
    back is returned (and logged). Consumers this version does not know are left for one that does.
    """
    revived = 0
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT id, project_id, kind, payload, retry_of, pending_jobs, traceparent FROM outbox
                WHERE pending_jobs <> '{}' AND dispatched_at < now() - make_interval(secs => $1)
                ORDER BY dispatched_at, id LIMIT $2 FOR UPDATE SKIP LOCKED""", float(timing.stale), timing.batch)
        checked: list[int] = []
        failure: BaseException | None = None
        try:
            for row in rows:
                for name in row["pending_jobs"]:
                    if name in jobs and await _enqueue(queue, jobs[name], row, timing.heartbeat) is not None:
                        revived += 1
                checked.append(row["id"])
        except REDIS_ERRORS as exc:
            failure = exc
        if checked:  # next look in `stale` seconds
            await conn.execute("UPDATE outbox SET dispatched_at = now() WHERE id = ANY($1::bigint[])", checked)
    if failure is not None:
        raise failure
    if revived:
        log.warning("re-enqueued %d job(s) the queue had lost", revived)
    return revived


def settler(pool: asyncpg.Pool) -> Settle:
    """What happens in Postgres when saq finishes a job: a completed or finally failed outbox job is no longer
    pending, and a final failure becomes a dead letter, in one transaction.

    A failure that saq will still retry (a swept job with attempts left) changes nothing. When Postgres
    cannot be reached the outcome is not recorded: the row stays pending, so the relay runs the job again
    later (idempotent handlers make that safe) rather than losing a dead letter.
    """

    async def settle(job: SaqJob, status: Status, error: str | None) -> None:
        kwargs = job.kwargs or {}
        name = kwargs.get("job")
        final = status == Status.FAILED or (status == Status.ABORTED and not job.retryable)
        if job.function != "dispatch" or not isinstance(name, str):
            if final:
                log.error("cron job %s failed after %d attempt(s): %s", job.function, job.attempts,
                          (error or "").strip().splitlines()[-1:])
            return
        if status != Status.COMPLETE and not final:
            return
        outbox_id = kwargs.get("outbox_id")
        try:
            async with pool.acquire() as conn, conn.transaction():
                if final:
                    await dead_letters.record(
                        conn, project_id=kwargs.get("project_id"), outbox_id=outbox_id, job=name,
                        kind=str(kwargs.get("kind", "")), payload=kwargs.get("payload") or {}, error=error,
                        attempts=job.attempts)
                if outbox_id is not None:
                    await conn.execute("UPDATE outbox SET pending_jobs = array_remove(pending_jobs, $2) WHERE id = $1",
                                       outbox_id, name)
        except PG_ERRORS as exc:
            log.warning("outcome of %s not recorded (%s); the relay will run it again", job.key, type(exc).__name__)
            return
        if final:
            log.error("job %s dead-lettered after %d attempt(s): %s", job.key, job.attempts,
                      (error or "").strip().splitlines()[-1:])

    return settle


async def _relay_loop(pool: asyncpg.Pool, queue: CellQueue, jobs: dict[str, Job], timing: Timing,
                      outage: _Outage) -> None:
    loop = asyncio.get_running_loop()
    next_recheck = loop.time() + timing.recheck
    while True:
        try:
            if loop.time() >= next_recheck:
                next_recheck = loop.time() + timing.recheck
                await rerelay_unfinished(pool, queue, jobs, timing)
            moved = await relay_outbox(pool, queue, jobs, timing)
            if moved:  # only an enqueue proves that Redis answers
                outage.up()
                continue
        except REDIS_ERRORS as exc:
            outage.down("relay", exc)
            await asyncio.sleep(1)
            continue
        except PG_ERRORS as exc:
            log.warning("outbox relay paused: Postgres unreachable (%s)", type(exc).__name__)
            await asyncio.sleep(1)
            continue
        await asyncio.sleep(timing.idle)


async def work(settings: CellSettings, stop: asyncio.Event, *, jobs: dict[str, Job] | None = None,
               crons: list[Cron] | None = None, timing: Timing | None = None, concurrency: int = 10) -> None:
    """Run the relay and the saq worker until `stop` is set.

    `jobs` and `crons` default to what the areas declare (`cell.jobs.registry`).
    """
    if jobs is None or crons is None:
        declared_jobs, declared_crons = registry()
        jobs = declared_jobs if jobs is None else jobs
        crons = declared_crons if crons is None else crons
    timing = timing or Timing()
    pool = await create_pool(settings.database_url, 5, min_size=0)
    outage = _Outage()
    # socket_timeout outlasts the 1 s blocking dequeue; a dead server is noticed at connect.
    redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=2)
    queue = CellQueue(redis, f"relay-{settings.region}", settler(pool), outage)
    http = httpx.AsyncClient(trust_env=False, timeout=10.0, follow_redirects=False)
    ctx_extra = {"pool": pool, "settings": settings, "store": ObjectStore(settings.object_store), "http": http,
                 "jobs": jobs}

    async def startup(ctx: dict[str, Any]) -> None:
        ctx.update(ctx_extra)

    # saq types its context as a closed TypedDict; ours carries the cell's pool and settings too.
    cron_jobs: list[Any] = [CronJob(cron_function(c), cron=c.cron, timeout=c.timeout, heartbeat=timing.heartbeat)
                            for c in crons]
    functions: list[Any] = [dispatch]
    timers = PartialTimersDict(schedule=1, worker_info=10, sweep=timing.sweep, abort=1)
    worker = CellWorker(queue, functions=functions, startup=startup, cron_jobs=cron_jobs, concurrency=concurrency,
                        shutdown_grace_period_s=1, dequeue_timeout=1, timers=timers)
    worker.outage = outage
    worker.SIGNALS = []  # this process owns SIGTERM/SIGINT: stop the relay and the worker together
    await queue.connect()
    tasks = [asyncio.create_task(worker.start()),
             asyncio.create_task(_relay_loop(pool, queue, jobs, timing, outage))]
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
        with contextlib.suppress(*REDIS_ERRORS):
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
