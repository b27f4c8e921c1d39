"""The resources a router process holds, opened and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from litestar import Request
from redis.asyncio import Redis

from common.mail import Mailer
from router.cells import Cells
from router.directory import Directory
from router.ratelimit import RateLimiter
from router.settings import RouterSettings


@dataclass
class RouterState:
    """What handlers and the proxy reach."""

    settings: RouterSettings
    pool: asyncpg.Pool
    redis: Redis
    directory: Directory
    cells: Cells
    limiter: RateLimiter
    mailer: Mailer | None = None
    """How the router sends email (invitations); None when no SMTP server or mail directory is configured."""


def state(request: Request[Any, Any, Any]) -> RouterState:
    """The running router's resources."""
    current: RouterState = request.app.state.router
    return current
