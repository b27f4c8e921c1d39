"""The cell API application: one region's Litestar app, its routes and its resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from redis.asyncio import Redis

from cell import health
from cell.audit import routes as audit
from cell.auth import Authenticator, HopMiddleware, KeyVerifier
from cell.chat import routes as chat
from cell.context import CellContext
from cell.db import ensure_region
from cell.feedback import routes as feedback
from cell.flags import routes as flags
from cell.integrations import routes as integrations
from cell.interactions import routes as interactions
from cell.keys import routes as keys
from cell.media import routes as media
from cell.privacy import routes as privacy
from cell.projects import routes as projects
from cell.replays import routes as replays
from cell.residency import routes as residency
from cell.roadmap import routes as roadmap
from cell.sessions import routes as sessions
from cell.settings import CellSettings, from_env
from cell.storage import ObjectStore
from cell.surveys import routes as surveys
from cell.users import routes as users
from cell.webhooks import routes as webhooks
from common.pg import create_pool
from common.problems import EXCEPTION_HANDLERS

# One module per area of the data model, each exporting ROUTES.
AREAS = (health, projects, keys, interactions, media, replays, sessions, users, feedback, roadmap, surveys, chat,
         privacy, flags, integrations, webhooks, audit, residency)


def create_app(settings: CellSettings | None = None) -> Any:
    """The cell ASGI app: Litestar wrapped in the hop-signature middleware."""
    settings = settings or from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await ensure_region(settings.database_url, settings.region)
        pool = await create_pool(settings.database_url, settings.db_pool_size)
        redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            verifier = KeyVerifier(pool, recheck=settings.key_recheck_seconds, region=settings.region,
                                   regions=settings.regions)
            store = ObjectStore(settings.object_store)
            app.state.ctx = CellContext(settings, pool, redis, Authenticator(pool, verifier), store)
            yield
        finally:
            await redis.aclose()
            await pool.close()

    app = Litestar(
        route_handlers=[handler for area in AREAS for handler in area.ROUTES],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title=f"Relay cell ({settings.region})", version="1.0.0"),
        debug=False,
        logging_config=None,
    )
    return HopMiddleware(app, region=settings.region, secret=settings.hop_secret.encode())  # type: ignore[arg-type]
