"""Rate limits shared by every router process, counted in the router's Redis (the `limits` library).

Kinds: per key prefix (or admin user) and route category (ingest, uploads,
management); per client for repeated bad credentials (wrong key secrets, unknown
key prefixes, the cells' 401s for keys), per client for unknown session tokens
(`bad_sessions`: past it, the client's session lookups stop reaching the
control DB until the window frees up), and per key prefix
for failed verifications a cell must pay for (keys from before digests); per
account and per client for failed logins; per client and per email for signups.
Client addresses (`router.access.client_ip`) are hashed before they become part
of a Redis key. When Redis is unreachable the limits are skipped for a few seconds
(fail open): routing must not stop because a counter store did.

The per-request limits (`admit`) must not cost a Redis round trip on the hot
path: each process counts locally and adds its counts to the shared window in
Redis every `flush_every` seconds (`limits`' `cost`), learning the window's
remaining budget in return. A process refuses once its unsent count reaches
the budget left at the last flush, so all processes together overshoot a limit
by at most what they admit within one flush interval.
"""

from __future__ import annotations

import asyncio
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
    "bad_sessions": "30/minute",
    "login_account": "10/15minutes",
    "login_client": "60/15minutes",
    "signup_client": "60/minute",
    "signup_email": "5/10minutes",
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


@dataclass(slots=True)
class _Budget:
    """One (category, identity)'s local view of its shared window."""

    pending: int = 0
    remaining: int | None = None  # left in the shared window at the last flush; None: not known yet
    reset_at: float = 0.0  # wall-clock time the shared window frees up again
    refused_until: float = 0.0


class RateLimiter:
    """All router limits, over one Redis."""

    flush_every = 0.05

    def __init__(self, redis_url: str, overrides: dict[str, str] | None = None) -> None:
        uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
        self.storage = RedisStorage(uri, implementation="redispy", wrap_exceptions=True,
                                    socket_timeout=0.25, socket_connect_timeout=0.25)
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        merged = {**DEFAULT_LIMITS, **(overrides or {})}
        self.items: dict[str, RateLimitItem] = {name: parse(value) for name, value in merged.items()}
        self._skip_until = 0.0
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused: dict[tuple[str, ...], float] = {}

    def admit(self, category: str, identity: str) -> None:
        """Count one request locally; raise 429 once the shared budget is spent. No I/O here."""
        item = self.items[category]
        budget = self._budgets.get((category, identity))
        if budget is None:
            budget = self._budgets[(category, identity)] = _Budget()
        now = time.time()
        if now < budget.refused_until or (budget.remaining is not None and budget.pending >= budget.remaining
                                          and now < budget.reset_at):
            reset = max(1, math.ceil(budget.reset_at - now))
            verdict = Verdict(False, item.amount, 0, reset)
            raise Problem(429, f"rate limit for {category} exceeded", headers=verdict.headers())
        budget.pending += 1
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_later(self.flush_every, self._spawn_flush)

    def _spawn_flush(self) -> None:
        task = asyncio.ensure_future(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Add the counts of this process to the shared windows and learn what is left of them."""
        self._flushing = False
        batch = [(key, b, b.pending) for key, b in self._budgets.items() if b.pending]
        for (category, identity), budget, count in batch:
            budget.pending -= count
            if time.monotonic() < self._skip_until:
                continue
            item = self.items[category]
            try:
                allowed = await self.strategy.hit(item, category, identity, cost=count)
                stats = await self.strategy.get_window_stats(item, category, identity)
            except StorageError as exc:
                self._skip_until = time.monotonic() + 5.0
                log.warning("rate limits skipped for 5 s: Redis unavailable (%s)", type(exc.storage_error).__name__)
                continue
            budget.remaining = stats.remaining
            budget.reset_at = stats.reset_time
            if not allowed or stats.remaining <= 0:
                budget.refused_until = max(budget.refused_until, stats.reset_time)
        if len(self._budgets) > 50_000:  # identities come and go: keep only those still in play
            now = time.time()
            self._budgets = {k: b for k, b in self._budgets.items() if b.pending or b.reset_at > now}

    async def hit(self, category: str, *identity: str) -> Verdict:
        """Count one event against `category` for `identity` in Redis now (rare paths: logins, bad keys)."""
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
        if len(self._refused) > 50_000:  # bounded: a flood of identities must not grow memory
            self._refused.clear()
        self._refused[(category, *identity)] = time.time() + reset
        return Verdict(False, item.amount, stats.remaining, reset)

    def refused_recently(self, category: str, *identity: str) -> int:
        """Seconds until `identity` may try again, when this process saw it refused in `category` and the
        window has not freed up yet (0 otherwise); no I/O, for refusing before costly work."""
        until = self._refused.get((category, *identity))
        if until is None:
            return 0
        left = until - time.time()
        if left <= 0:
            del self._refused[(category, *identity)]
            return 0
        return max(1, math.ceil(left))

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
