"""Liveness and readiness of a cell API process."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get

from cell.context import ctx
from common.problems import PROBLEM_JSON, Problem, encode


class Health(msgspec.Struct):
    """Health of this process and, for readiness, of each dependency."""

    status: str
    region: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)


@get("/healthz", sync_to_thread=False)
def healthz(request: Request[Any, Any, Any]) -> Health:
    """Alive: the process answers."""
    return Health("ok", ctx(request).settings.region)


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """Ready: Postgres and Redis answer within a second; 503 naming what is down otherwise."""
    context = ctx(request)
    checks: dict[str, str] = {}

    async def probe(name: str, call: Any) -> None:
        try:
            await asyncio.wait_for(call, 1.0)
            checks[name] = "ok"
        except (OSError, TimeoutError, ConnectionError, Exception) as exc:  # noqa: BLE001 - any failure means down
            checks[name] = f"down: {type(exc).__name__}"

    await asyncio.gather(probe("postgres", context.pool.fetchval("SELECT 1")), probe("redis", context.redis.ping()))
    down = sorted(k for k, v in checks.items() if v != "ok")
    if down:
        problem = Problem(503, f"not ready: {', '.join(down)} down", retry_after=5)
        return Response(encode(problem, "/readyz"), status_code=503, media_type=PROBLEM_JSON,
                        headers=problem.headers)
    return Response(Health("ok", context.settings.region, checks))


ROUTES = [healthz, readyz]
