"""The router application: a thin ASGI dispatcher in front of the proxy and the control plane.

Requests for data that lives in a cell (`/v1/ingest/…`, and everything under
`/v1/projects/{id}/…` except keys, members, invitations and moves) go straight to the raw
proxy; the router's own endpoints (auth, projects, keys, members, regions,
health) are a Litestar app, which also owns the lifespan and its resources.
CORS (router.cors) is answered before any of them; `/sdk/…` is the browser SDK's files (router.sdk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from redis.asyncio import Redis

from common import metrics, telemetry
from common.health import watch_dependencies
from common.mail import Mailer
from common.pg import create_pool
from common.problems import EXCEPTION_HANDLERS, Problem
from common.web import STATIC_PATH
from router import access, health, openapi
from router.auth import account
from router.auth import routes as auth
from router.cells import Cells
from router.cors import Cors
from router.dashboard import access as dashboard_access
from router.dashboard import gate as dashboard_gate
from router.dashboard import routes as dashboard
from router.directory import Directory
from router.dispatch import cell_route
from router.members import routes as members
from router.moves import driver as mover
from router.moves import routes as moves
from router.moves.settings import from_env as move_settings
from router.projects import lifecycle, provisioning
from router.projects import routes as projects
from router.proxy import GLOBAL, REQUESTS, Proxy, Receive, Scope, Send, request_id, send_problem
from router.ratelimit import RateLimiter
from router.sdk import SdkFiles
from router.settings import RouterSettings, from_env
from router.state import RouterState

log = logging.getLogger("relay.router")


class RouterApp:
    """Dispatch: proxy paths to `Proxy`, the rest to the Litestar control plane."""

    def __init__(self, control: Litestar, cors: Cors | None = None, sdk: SdkFiles | None = None) -> None:
        self.control = control
        self.cors = cors or Cors(())
        self.sdk = sdk or SdkFiles(None)
        self.proxy = Proxy(lambda: control.state.router)
        # The control plane's requests: server spans when tracing, metrics as route class `control`.
        self.served = telemetry.HttpServerTelemetry(control, _record_control, trust_incoming=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if await self.cors.preflight(scope, send):
                return
            send = self.cors.stamp(scope, send)
            if path.startswith("/sdk/"):
                await self.sdk(scope, receive, send)
                return
            routed = cell_route(path, scope["method"])
            if routed == "ingest":
                await self.proxy.ingest(scope, receive, send)
                return
            if routed == "hooks":
                await self.proxy.hooks(scope, receive, send, path[len("/v1/hooks/"):].partition("/")[0])
                return
            if routed == "management":
                await self.proxy.management(scope, receive, send, path[len("/v1/projects/"):].partition("/")[0])
                return
            if path == "/app":  # the session cookie's path is /app/: send the browser where it is sent
                await send({"type": "http.response.start", "status": 308,
                            "headers": [(b"location", b"/app/"), (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
            if path.startswith("/app/") and not path.startswith(STATIC_PATH + "/"):
                try:
                    scope, receive = await dashboard_gate.admit(scope, receive)
                except Problem as problem:
                    await send_problem(send, problem, path, request_id(scope))
                    return
                if path.startswith("/app/projects/"):
                    project, _, rest = path[len("/app/projects/"):].partition("/")
                    if project and rest.partition("/")[0] not in dashboard_access.SECTIONS:
                        await self.proxy.page(scope, receive, send, project)
                        return
            rid = request_id(scope)

            async def stamped(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
                await send(message)

            await self.served(scope, receive, stamped)
            return
        await self.control(scope, receive, send)  # type: ignore[arg-type]


def _record_control(scope: Scope, status: int, seconds: float, project: str | None) -> None:
    REQUESTS.record((GLOBAL, "control", scope["method"], status), seconds)


_BREAKER_STATES = ("closed", "half-open", "open")


def _watch(st: RouterState) -> None:
    """The router's gauges, read at each collection: per cell breaker, bulkhead and connections; control DB."""
    watch_dependencies()
    cells = list(st.cells.by_region.values())

    def breaker() -> list[tuple[float, dict[str, Any]]]:
        return [(1.0 if c.breaker.state == state else 0.0, {"relay.region": c.region, "state": state})
                for c in cells for state in _BREAKER_STATES]

    def connections() -> list[tuple[float, dict[str, Any]]]:
        return [(float(c.pool.in_use), {"relay.region": c.region}) for c in cells]

    metrics.gauge("relay.router.cell.breaker", "Breaker state of each cell as this router sees it (1 = in it)",
                  breaker)
    metrics.gauge("relay.router.cell.in_flight", "Requests in flight to each cell",
                  lambda: [(float(c.in_flight), {"relay.region": c.region}) for c in cells])
    metrics.gauge("relay.router.cell.capacity", "Requests each cell may have in flight before callers get 503",
                  lambda: [(float(c.limit), {"relay.region": c.region}) for c in cells])
    metrics.gauge("relay.router.cell.connections", "Pooled connections to each cell in use", connections)
    metrics.gauge("relay.db.pool.connections", "Control-database connections, by state (busy, idle, max)",
                  lambda: metrics.pool_usage(st.pool, GLOBAL))


def create_app(settings: RouterSettings | None = None) -> RouterApp:
    """The router ASGI app."""
    settings = settings or from_env()
    moving = move_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        directory = Directory(settings.directory_snapshot)
        pool = await create_pool(settings.database_url, settings.db_pool_size, min_size=0, timeout=5)
        try:
            await directory.load(pool)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if not directory.restore():
                await pool.close()
                raise
            log.warning("control DB unreachable at start: routing from the saved directory snapshot")
        redis = Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
        feed = Redis.from_url(settings.redis_url, socket_connect_timeout=1, health_check_interval=10)
        cells = Cells(settings.cells, settings.cell_concurrency)
        st = RouterState(settings, pool, redis, directory, cells, RateLimiter(settings.redis_url, settings.rate_limits),
                         Mailer.configured(settings.smtp_url, settings.mail_from, settings.mail_dir))
        app.state.router = st
        _watch(st)
        tasks = [asyncio.create_task(directory.follow(feed)),
                 asyncio.create_task(directory.reconcile(pool, settings.reconcile_seconds)),
                 asyncio.create_task(provisioning.relay(st)),
                 asyncio.create_task(mover.Mover(st, moving).run())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await cells.close()
            await feed.aclose()
            await redis.aclose()
            await pool.close()

    control = Litestar(
        route_handlers=[*health.ROUTES, *auth.ROUTES, *projects.ROUTES, *members.ROUTES, *moves.ROUTES,
                        *dashboard.ROUTES, *openapi.ROUTES, metrics.scrape_route(), *lifecycle.ROUTES,
                        *account.ROUTES],
        template_config=dashboard.TEMPLATES,
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=access.key_first,  # a presented key is verified before a body is parsed
        openapi_config=OpenAPIConfig(title="Relay router", version="1.0.0"),
        debug=False,
        logging_config=None,
    )
    return RouterApp(control, Cors(settings.dashboard_origins), SdkFiles(settings.sdk_dir or None))

