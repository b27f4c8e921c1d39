"""Router health, and `GET /v1/regions`: each region with its cell's health as this router sees it.

`/v1/regions` is public and each answer costs a call to every cell, so the
answer is shared: computed at most once per `regions_cache_seconds` per process,
and concurrent callers wait for the same round of health calls.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response, get

from common.health import Health, readiness
from router.state import RouterState, state


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
def healthz() -> Health:
    """Alive."""
    return Health("ok")


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """Ready once the directory is in memory (loaded, or restored from its snapshot): that is all routing
    needs. The control DB and Redis are reported (a control-plane outage degrades sign-in and new keys, not
    traffic), so an outage there never takes every router out of its Service."""
    st = state(request)
    return await readiness({"directory": st.directory.loaded_at > 0},
                           optional={"control_db": st.pool.fetchval("SELECT 1"), "redis": st.redis.ping()})


@dataclass(frozen=True, slots=True)
class _Answer:
    """One round of health calls, shared by every caller until it is `regions_cache_seconds` old."""

    asked_at: float
    regions: asyncio.Future[RegionList]


async def _ask(st: RouterState) -> RegionList:
    cells = list(st.cells.by_region.values())
    statuses = await asyncio.gather(*(c.health() for c in cells))
    return RegionList([Region(c.region, c.tag, s, c.breaker.state, c.in_flight) for c, s in zip(cells, statuses,
                                                                                                 strict=True)])


@get("/v1/regions")
async def regions(request: Request[Any, Any, Any]) -> RegionList:
    """Every configured region and its health (no auth: SDKs and status pages read it), a few seconds old at
    most."""
    st = state(request)
    answer: _Answer | None = request.app.state.get("regions_answer")
    now = time.monotonic()
    if answer is None or now - answer.asked_at >= st.settings.regions_cache_seconds or (
            answer.regions.done() and answer.regions.exception() is not None):
        answer = _Answer(now, asyncio.ensure_future(_ask(st)))
        request.app.state["regions_answer"] = answer
    return await asyncio.shield(answer.regions)


ROUTES = [healthz, readyz, regions]
