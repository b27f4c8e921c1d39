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
    """Ready when the region's Postgres answers within a second (nothing is acknowledged without it); its
    Redis is reported but does not make the cell unready: ingest rides over a Redis outage on the outbox."""
    context = ctx(request)
    return await readiness({"postgres": context.pool.fetchval("SELECT 1")}, context.settings.region,
                           optional={"redis": context.redis.ping()})


ROUTES = [healthz, readyz]
