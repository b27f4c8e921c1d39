"""Router health, and `GET /v1/regions`: each region with its cell's health as this router sees it."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get

from common.problems import PROBLEM_JSON, Problem, encode
from router.state import state


class Region(msgspec.Struct):
    """One region."""

    name: str
    tag: str
    status: str
    breaker: str
    in_flight: int


class RegionList(msgspec.Struct):
    data: list[Region]


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Alive."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """Ready when the control DB and Redis answer; routing itself goes on without them."""
    st = state(request)
    checks: dict[str, str] = {}

    async def probe(name: str, call: Any) -> None:
        try:
            await asyncio.wait_for(call, 1.0)
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "down" for readiness
            checks[name] = f"down: {type(exc).__name__}"

    await asyncio.gather(probe("control_db", st.pool.fetchval("SELECT 1")), probe("redis", st.redis.ping()))
    down = sorted(k for k, v in checks.items() if v != "ok")
    if down:
        problem = Problem(503, f"not ready: {', '.join(down)} down", retry_after=5)
        return Response(encode(problem, "/readyz"), status_code=503, media_type=PROBLEM_JSON,
                        headers=problem.headers)
    return Response({"status": "ok", "checks": checks})


@get("/v1/regions")
async def regions(request: Request[Any, Any, Any]) -> RegionList:
    """Every configured region and its health (no auth: SDKs and status pages read it)."""
    cells = list(state(request).cells.by_region.values())
    statuses = await asyncio.gather(*(c.health() for c in cells))
    return RegionList([Region(c.region, c.tag, s, c.breaker.state, c.in_flight) for c, s in zip(cells, statuses,
                                                                                                 strict=True)])


ROUTES = [healthz, readyz, regions]
