"""Liveness and readiness of a cell API process."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from cell.context import ctx
from common.health import Health, readiness


@get("/healthz", sync_to_thread=False)
def healthz(request: Request[Any, Any, Any]) -> Health:
    """Alive: the process answers."""
    return Health("ok", ctx(request).settings.region)


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """Ready: the region's Postgres and Redis answer within a second; 503 naming what is down otherwise."""
    context = ctx(request)
    return await readiness({"postgres": context.pool.fetchval("SELECT 1"), "redis": context.redis.ping()},
                           context.settings.region)


ROUTES = [healthz, readyz]
