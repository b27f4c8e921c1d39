"""Rate limits shared by every router process, counted in the router's Redis (the `limits` library).

Three kinds: per key prefix (or admin user) and route category (ingest, uploads,
management); per client for repeated bad credentials; per account and per client
for failed logins. Client addresses are hashed before they become part of a
Redis key. When Redis is unreachable the limits are skipped for a few seconds
(fail open): routing must not stop because a counter store did.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from common.problems import Problem

log = logging.getLogger("relay.router.ratelimit")
DEFAULT_LIMITS = {
    "ingest": "600/second",
    "uploads": "50/second",
    "management": "100/second",
    "bad_credentials": "30/minute",
    "login_account": "10/15minutes",
    "login_client": "60/15minutes",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a request may pass, and what to tell the caller about its budget."""

    allowed: bool
    limit: int
    remaining: int
    reset_in: int

    def headers(self) -> dict[str, str]:
        """`RateLimit-*` (IETF draft) and, when refused, `Retry-After`."""
        out = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
               "RateLimit-Reset": str(self.reset_in)}
        if not self.allowed:
            out["Retry-After"] = str(max(1, self.reset_in))
        return out


def client_tag(ip: str | None) -> str:
    """A stable, non-reversible stand-in for a client address in Redis keys."""
    return hashlib.sha256(f"relay-client:{ip or '-'}".encode()).hexdigest()[:24]


class RateLimiter:
    """All router limits, over one Redis."""

    def __init__(self, redis_url: str, overrides: dict[str, str] | None = None) -> None:
        uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
        self.storage = RedisStorage(uri, implementation="redispy", wrap_exceptions=True,
                                    socket_timeout=0.25, socket_connect_timeout=0.25)
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        merged = {**DEFAULT_LIMITS, **(overrides or {})}
        self.items: dict[str, RateLimitItem] = {name: parse(value) for name, value in merged.items()}
        self._skip_until = 0.0

    async def hit(self, category: str, *identity: str) -> Verdict:
        """Count one request against `category` for `identity`; fail open while Redis is down."""
        item = self.items[category]
        if time.monotonic() < self._skip_until:
            return Verdict(True, item.amount, item.amount, 0)
        try:
            allowed = await self.strategy.hit(item, category, *identity)
            if allowed:
                return Verdict(True, item.amount, -1, 0)
            stats = await self.strategy.get_window_stats(item, category, *identity)
        except StorageError as exc:
            self._skip_until = time.monotonic() + 5.0
            log.warning("rate limits skipped for 5 s: Redis unavailable (%s)", type(exc.storage_error).__name__)
            return Verdict(True, item.amount, item.amount, 0)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(False, item.amount, stats.remaining, reset)

    async def check(self, category: str, *identity: str) -> Verdict:
        """Whether `identity` is over its budget, without counting (for failure-counted limits)."""
        item = self.items[category]
        if time.monotonic() < self._skip_until:
            return Verdict(True, item.amount, item.amount, 0)
        try:
            ok = await self.strategy.test(item, category, *identity)
            if ok:
                return Verdict(True, item.amount, -1, 0)
            stats = await self.strategy.get_window_stats(item, category, *identity)
        except StorageError:
            self._skip_until = time.monotonic() + 5.0
            return Verdict(True, item.amount, item.amount, 0)
        return Verdict(False, item.amount, stats.remaining, max(1, math.ceil(stats.reset_time - time.time())))

    async def enforce(self, category: str, *identity: str, count: bool = True) -> Verdict:
        """`hit` (or `check`) and raise a 429 problem when over the limit."""
        verdict = await (self.hit(category, *identity) if count else self.check(category, *identity))
        if not verdict.allowed:
            raise Problem(429, f"rate limit for {category.replace('_', ' ')} exceeded", headers=verdict.headers())
        return verdict
