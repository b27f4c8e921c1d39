"""The cell API application: one region's Litestar app, its routes and its resources."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar, Request, Response
from litestar.openapi import OpenAPIConfig
from redis.asyncio import Redis
from saq.queue.redis import RedisQueue

from cell import health, outbox
from cell.audit import routes as audit
from cell.auth import Authenticator, HopMiddleware, KeyVerifier, NonceBook
from cell.chat import routes as chat
from cell.context import CellContext
from cell.dashboard import routes as dashboard
from cell.db import ensure_region
from cell.enrichment import index
from cell.exports import routes as exports
from cell.feedback import routes as feedback
from cell.flags import routes as flags
from cell.integrations import routes as integrations
from cell.interactions import routes as interactions
from cell.interactions.writer import Writer
from cell.keys import routes as keys
from cell.keys.usage import UsageRecorder
from cell.media import routes as media
from cell.moves import routes as moves
from cell.privacy import routes as privacy
from cell.privacy.scrub import Scrubber
from cell.projects import lifecycle
from cell.projects import routes as projects
from cell.projects import secret as project_secret
from cell.replays import routes as replays
from cell.residency import routes as residency
from cell.roadmap import routes as roadmap
from cell.sessions import routes as sessions
from cell.settings import CellSettings, from_env
from cell.storage import ObjectStore
from cell.surveys import routes as surveys
from cell.users import routes as users
from cell.webhooks import routes as webhooks
from common import metrics, telemetry
from common.health import watch_dependencies
from common.pg import create_pool
from common.problems import EXCEPTION_HANDLERS, Problem, database_handler, problem_handler

# One module per area of the data model, each exporting ROUTES.
AREAS = (health, projects, keys, interactions, media, replays, sessions, users, feedback, roadmap, surveys, chat,
         privacy, flags, integrations, webhooks, audit, residency, moves, lifecycle, exports, dashboard)


# Per-request metrics of the cell API (see common.metrics): per route template, method and status.
REQUESTS = metrics.timings(
    count="relay.cell.requests", duration="relay.cell.request.duration", errors="relay.cell.request.errors",
    labels=("relay.region", "http.route", "http.request.method", "http.response.status_code"),
    description="Requests the cell API answered, per route template", failed=metrics.server_error(3))
PROJECTS = metrics.counts("relay.cell.project.requests", ("relay.region", "relay.project_id", "status_class"),
                          "Requests the cell API answered for each project, per status class")


def _recorder(region: str) -> telemetry.Recorder:
    def record(scope: MutableMapping[str, Any], status: int, seconds: float, project: str | None) -> None:
        REQUESTS.record((region, telemetry.route_of(scope), scope["method"], status), seconds)
        if project:
            PROJECTS.add((region, project, metrics.status_class(status)))

    return record


def _watch(context: CellContext) -> None:
    """The cell's gauges: outbox backlog and queue depth (read at most every 5 s), database pool use."""
    watch_dependencies()
    region = context.settings.region
    queue = RedisQueue(context.redis, name=f"relay-{region}")  # the worker's queue (cell.worker)

    async def backlog() -> list[tuple[float, dict[str, Any]]]:
        return [(float(await outbox.backlog(context.pool)), {"relay.region": region})]

    async def depth() -> list[tuple[float, dict[str, Any]]]:
        queued, active, incomplete = await asyncio.gather(
            queue.count("queued"), queue.count("active"), queue.count("incomplete"))
        return [(float(n), {"relay.region": region, "state": state}) for state, n in
                (("queued", queued), ("active", active), ("scheduled", max(incomplete - queued - active, 0)))]

    metrics.gauge("relay.cell.outbox.backlog", "Outbox rows not yet relayed to the queue", metrics.Probe(backlog))
    metrics.gauge("relay.cell.queue.depth", "Jobs on the cell's queue, by state (queued, active, scheduled)",
                  metrics.Probe(depth))
    metrics.gauge("relay.db.pool.connections", "Database connections of this API process, by state",
                  lambda: metrics.pool_usage(context.pool, region))


def database_error(request: Request[Any, Any, Any], exc: asyncpg.PostgresError) -> Response[bytes]:
    """A write refused by a project move's fence in the database (SQLSTATE RL503) is a 503 to retry;
    anything else as every service answers a database error (common.problems.database_handler)."""
    if getattr(exc, "sqlstate", None) == "RL503":
        problem = Problem(503, "this project is moving to another region; retry in a moment", retry_after=2)
        return problem_handler(request, problem)
    if getattr(exc, "sqlstate", None) == "RL404":  # refused by the guard of a project being deleted
        return problem_handler(request, Problem(404, "no such project"))
    return database_handler(request, exc)


def settle_heap() -> None:
    """Move what start-up made (modules, classes, routes, templates: ~86,000 objects that live as long as the
    process) out of the garbage collector's sight, so a full collection walks only what requests made since.
    Without it each full collection walks them all inside whichever request crossed the threshold (measured:
    3 full collections per 400 renders of a 50-row inbox page, whose render took 1.8 ms instead of 1.05 ms
    with them frozen). Objects made later are collected as before."""
    gc.collect()
    gc.freeze()


def create_app(settings: CellSettings | None = None) -> Any:
    """The cell ASGI app: Litestar with server spans and request metrics, inside the hop-signature middleware
    (which stays outermost: unsigned requests are refused before anything is measured or traced)."""
    settings = settings or from_env()
    nonces = NonceBook()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await ensure_region(settings.database_url, settings.region)
        pool = await create_pool(settings.database_url, settings.db_pool_size)
        await project_secret.seal_plain(pool, settings.secret_key)  # secrets from before migration 0017
        redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        nonces.attach(redis)
        try:
            usage = UsageRecorder(pool, interval=settings.key_usage_interval_seconds)
            verifier = KeyVerifier(pool, recheck=settings.key_recheck_seconds, region=settings.region,
                                   regions=settings.regions, pepper=settings.key_pepper.encode(),
                                   on_use=usage.used)
            store = ObjectStore(settings.object_store)
            ingest = Writer(pool, settings.region)
            scrubber = Scrubber(settings.scrub_threads, settings.scrub_budget_seconds, settings.scrub_budget_chars)
            app.state.ctx = CellContext(settings, pool, redis, Authenticator(pool, verifier), store, ingest,
                                        scrubber, await index.detect(pool))
            _watch(app.state.ctx)
            # Scrapes refresh the gauges; with OTLP only, nobody scrapes, so refresh them in the background.
            fresh = asyncio.create_task(metrics.keep_fresh()) if metrics.otlp_configured() else None
            usage.start()
            settle_heap()
            try:
                yield
            finally:
                await usage.close()
                if fresh is not None:
                    fresh.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fresh
                await ingest.close()
                scrubber.close()
        finally:
            nonces.attach(None)
            await redis.aclose()
            await pool.close()

    app = Litestar(
        route_handlers=[*(handler for area in AREAS for handler in area.ROUTES), metrics.scrape_route()],
        lifespan=[lifespan],
        exception_handlers={**EXCEPTION_HANDLERS, asyncpg.PostgresError: database_error},
        template_config=dashboard.TEMPLATES,
        openapi_config=OpenAPIConfig(title=f"Relay cell ({settings.region})", version="1.0.0"),
        debug=False,
        logging_config=None,
    )
    served = telemetry.HttpServerTelemetry(app, _recorder(settings.region))
    return HopMiddleware(served, region=settings.region, secret=settings.hop_secret.encode(), nonces=nonces)
