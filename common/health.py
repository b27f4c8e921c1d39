"""Readiness for every service: probe each dependency with a deadline, answer 200 or a 503 problem."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import msgspec
from litestar import Response

from common.problems import PROBLEM_JSON, Problem, encode


class Health(msgspec.Struct, omit_defaults=True):
    """Health of this process and, for readiness, of each dependency."""

    status: str
    region: str | None = None
    checks: dict[str, str] = msgspec.field(default_factory=dict)


async def readiness(probes: dict[str, Awaitable[Any]], region: str | None = None,
                    timeout: float = 1.0) -> Response[Any]:
    """200 when every probe answers within `timeout`, else 503 naming what is down."""
    checks: dict[str, str] = {}

    async def probe(name: str, call: Awaitable[Any]) -> None:
        try:
            await asyncio.wait_for(call, timeout)
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - whatever the failure, the dependency is down for readiness
            checks[name] = f"down: {type(exc).__name__}"

    await asyncio.gather(*(probe(name, call) for name, call in probes.items()))
    down = sorted(k for k, v in checks.items() if v != "ok")
    if down:
        problem = Problem(503, f"not ready: {', '.join(down)} down", retry_after=5)
        return Response(encode(problem, "/readyz"), status_code=503, media_type=PROBLEM_JSON,
                        headers=problem.headers)
    return Response(Health("ok", region, checks))
