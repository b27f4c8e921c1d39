"""Readiness for every service: probe each dependency with a deadline, answer 200 or a 503 problem.

Readiness is what an orchestrator acts on: an unready pod leaves its Service. So only what a process cannot
serve its traffic without makes it unready (`required`); a dependency the design rides over (the router's
control DB and Redis while its directory routes, a cell's Redis while the outbox holds follow-up jobs) is
`optional`: reported in the body and in `relay.health.dependency` as degraded, never a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import msgspec
from litestar import Response

from common import metrics
from common.problems import PROBLEM_JSON, Problem, encode


class Health(msgspec.Struct, omit_defaults=True):
    """Health of this process and, for readiness, of each dependency."""

    status: str
    """`ok`, or `degraded` when an optional dependency is down (still ready)."""
    region: str | None = None
    checks: dict[str, str] = msgspec.field(default_factory=dict)
    degraded: list[str] = msgspec.field(default_factory=list)


async def _probe(call: Awaitable[Any] | bool, timeout: float) -> str:
    if isinstance(call, bool):  # a condition known in process (the router's directory is loaded)
        return "ok" if call else "down: not yet"
    try:
        await asyncio.wait_for(call, timeout)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - whatever the failure, the dependency is down for readiness
        return f"down: {type(exc).__name__}"


async def readiness(required: dict[str, Awaitable[Any] | bool], region: str | None = None,
                    timeout: float = 1.0, optional: dict[str, Awaitable[Any]] | None = None) -> Response[Any]:
    """200 when every required probe answers within `timeout`, else 503 naming what is down; optional probes
    that fail make the answer `degraded` (200) and are named in the body and the health gauge."""
    names = [*required, *(optional or {})]
    calls = [*required.values(), *(optional or {}).values()]
    checks = dict(zip(names, await asyncio.gather(*(_probe(c, timeout) for c in calls)), strict=True))
    for name, result in checks.items():
        DEPENDENCIES[(region or metrics.GLOBAL, name)] = 1.0 if result == "ok" else 0.0
    down = sorted(k for k in required if checks[k] != "ok")
    if down:
        problem = Problem(503, f"not ready: {', '.join(down)} down", retry_after=5)
        return Response(encode(problem, "/readyz"), status_code=503, media_type=PROBLEM_JSON,
                        headers=problem.headers)
    degraded = sorted(k for k in optional or {} if checks[k] != "ok")
    return Response(Health("degraded" if degraded else "ok", region, checks, degraded))


DEPENDENCIES: dict[tuple[str, str], float] = {}
"""The last readiness result per (region, dependency): 1 up, 0 down; read by the `relay.health.dependency`
gauge, registered once per process by `watch_dependencies`."""


def watch_dependencies() -> None:
    """Register the gauge of dependency health (each service's lifespan calls this once)."""
    metrics.gauge("relay.health.dependency", "Whether each dependency answered the last readiness probe (1 up)",
                  lambda: [(v, {"relay.region": r, "dependency": d}) for (r, d), v in DEPENDENCIES.items()])
