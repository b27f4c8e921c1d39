"""The cell API application: one region's Litestar app, its routes and its resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from redis.asyncio import Redis

from cell import health
from cell.auth import Authenticator, HopMiddleware, KeyVerifier
from cell.context import CellContext
from cell.db import ensure_region
from cell.interactions import routes as interactions
from cell.keys import routes as keys
from cell.projects import routes as projects
from cell.settings import CellSettings, from_env
from common.pg import create_pool
from common.problems import EXCEPTION_HANDLERS


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
            app.state.ctx = CellContext(settings, pool, redis, Authenticator(pool, verifier))
            yield
        finally:
            await redis.aclose()
            await pool.close()

    app = Litestar(
        route_handlers=[*health.ROUTES, *projects.ROUTES, *keys.ROUTES, *interactions.ROUTES],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title=f"Relay cell ({settings.region})", version="1.0.0"),
        debug=False,
    )
    return HopMiddleware(app, region=settings.region, secret=settings.hop_secret.encode())  # type: ignore[arg-type]
