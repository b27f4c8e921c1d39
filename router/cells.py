"""The router's connections to each cell: one pool, one bulkhead and one breaker per cell.

A cell that is slow, saturated or down affects only its own callers: its pool
and concurrency limit are its own, and its breaker turns a dead cell into fast
503s with `Retry-After`, then lets a probe through to bring it back.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx

from common.problems import Problem
from common.settings import CellEndpoint
from common.signing import Actor, sign
from router.upstream import Pool

POOL_IDLE_SECONDS = 30
"""How long a pooled connection to a cell may sit idle before the router drops it: shorter than a cell
keeps one open (`common.serve.KEEP_ALIVE_SECONDS`), so a request never goes out on a connection the cell
is closing (an instant disconnect, answered 503 as if the cell were down)."""

class Breaker:
    """Opens after `threshold` consecutive connection failures; half-opens after `cooldown`."""

    def __init__(self, threshold: int = 5, cooldown: float = 2.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        """Whether a request may go to the cell now (one probe at a time when half-open)."""
        return self.admit() is not None

    def admit(self) -> bool | None:
        """None when refused; else whether the request admitted is the half-open probe, which its caller
        must end with `success`, `failure` or, when it ended with neither, `abandon`."""
        state = self.state
        if state == "closed":
            return False
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return None

    def abandon(self) -> None:
        """A probe ended without telling whether the cell works (the client went away, its body was too
        large): free the slot so the next request probes, rather than the breaker staying open for good."""
        self._probing = False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._probing = False

    def failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = time.monotonic()


class Cell:
    """One region's cell as the router reaches it."""

    def __init__(self, region: str, endpoint: CellEndpoint, concurrency: int) -> None:
        self.region = region
        self.url = endpoint.url.rstrip("/")
        self.tag = endpoint.tag
        self.secret = endpoint.hop_secret.encode()
        self.limit = concurrency
        self.in_flight = 0
        self.breaker = Breaker()
        # Over https the cell's certificate is checked (host name and chain) against its CA bundle.
        tls = ssl.create_default_context(cafile=endpoint.ca_file or None) if self.url.startswith("https:") else None
        # The hot path's client (router.upstream): one write a request, httptools for the answer, keep-alive.
        # At most `concurrency` connections are in use, since the bulkhead admits no more requests.
        self.pool = Pool(self.url, tls, POOL_IDLE_SECONDS)
        # Control-plane calls (provisioning, keys), where throughput does not matter.
        self.control = httpx.AsyncClient(base_url=self.url, trust_env=False, timeout=10.0,
                                         verify=tls if tls else True)

    def admit(self) -> bool:
        """Take a bulkhead slot, or refuse at once with 503 while the cell is saturated or broken.

        Returns whether this request is the breaker's half-open probe: `release` must then be told so.
        """
        if self.in_flight >= self.limit:
            raise Problem(503, f"region {self.region} is saturated", retry_after=1, region=self.region)
        probe = self.breaker.admit()
        if probe is None:
            raise Problem(503, f"region {self.region} is unavailable", retry_after=2, region=self.region)
        self.in_flight += 1
        return probe

    def release(self, probe: bool = False) -> None:
        """Give the bulkhead slot back; a probe that ended without a verdict frees the breaker's probe slot."""
        self.in_flight -= 1
        if probe:
            self.breaker.abandon()

    async def call(self, method: str, path: str, actor: Actor, json: Any = None,
                   params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        """A signed control-plane request; connection failures become a 503 problem. `headers`: the caller's
        Authorization when a key acts, so the cell verifies the key again."""
        request = self.control.build_request(method, path, json=json, params=params, headers=headers)
        target = request.url.raw_path.decode()
        request.headers.update(sign(self.secret, method, target, actor, body=request.content))
        try:
            response = await self.control.send(request)
        except httpx.TransportError as exc:
            self.breaker.failure()
            raise Problem(503, f"region {self.region} is unreachable", retry_after=2, region=self.region) from exc
        self.breaker.success()
        return response

    async def health(self) -> str:
        """`ok` or what is wrong, as the router sees the cell right now."""
        try:
            response = await self.control.get("/readyz", timeout=2.0)
        except httpx.TransportError as exc:
            return f"unreachable ({type(exc).__name__})"
        return "ok" if response.status_code == 200 else f"not ready ({response.status_code})"

    async def close(self) -> None:
        self.pool.close()
        await self.control.aclose()


class Cells:
    """All cells, by region."""

    def __init__(self, endpoints: dict[str, CellEndpoint], concurrency: int) -> None:
        self.by_region = {region: Cell(region, ep, concurrency) for region, ep in endpoints.items()}
        self.by_tag = {cell.tag: cell for cell in self.by_region.values()}

    def __getitem__(self, region: str) -> Cell:
        cell = self.by_region.get(region)
        if cell is None:
            raise Problem(503, f"region {region} is not configured on this router", retry_after=30)
        return cell

    async def close(self) -> None:
        for cell in self.by_region.values():
            await cell.close()
