"""`api_keys.last_used_at`, written coalesced: at most once per key per interval (a minute) and process.

A key is verified on every request (cell.auth.KeyVerifier), and a write per
request would turn every ingest call into an UPDATE of one hot row. The
verifier tells a `UsageRecorder` instead; it notes the time of a key's first
use in each interval and a background task writes the noted times in one
statement, about once a second. A write never moves `last_used_at` back, and
one that another process made within the interval is left alone, so several
API processes coalesce too. A failed write is logged and retried with the next
use: usage is bookkeeping, never a reason to fail a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime

import asyncpg

log = logging.getLogger("relay.keys.usage")

FLUSH_SECONDS = 1.0
"""How often noted uses are written."""
MAX_TRACKED = 100_000
"""Keys remembered per process; past it, those outside their interval are forgotten."""


class UsageRecorder:
    """Notes key uses and writes them coalesced; started and stopped by the app's lifespan."""

    def __init__(self, pool: asyncpg.Pool, *, interval: float) -> None:
        self.pool = pool
        self.interval = interval
        self._noted: dict[uuid.UUID, float] = {}
        """Key id → monotonic time its current interval began (its last noted use)."""
        self._pending: dict[uuid.UUID, datetime] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def used(self, key_id: uuid.UUID) -> None:
        """A request was authenticated with this key (called by the verifier; never waits)."""
        now = time.monotonic()
        last = self._noted.get(key_id)
        if last is not None and now - last < self.interval:
            return
        if len(self._noted) >= MAX_TRACKED:
            self._noted = {k: t for k, t in self._noted.items() if now - t < self.interval}
        self._noted[key_id] = now
        self._pending[key_id] = datetime.now(UTC)
        self._wake.set()

    def start(self) -> None:
        """Run the writer in the background."""
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop the writer, writing what is still pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(FLUSH_SECONDS)

    async def flush(self) -> int:
        """Write the noted uses now, in one statement; how many keys were noted."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        ids = list(pending)
        try:
            await self.pool.execute(
                """UPDATE api_keys k SET last_used_at = u.at
                     FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
                    WHERE k.id = u.id
                      AND (k.last_used_at IS NULL OR k.last_used_at <= u.at - make_interval(secs => $3))""",
                ids, [pending[i] for i in ids], self.interval)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("could not record the use of %d API key(s): %s", len(ids), type(exc).__name__)
            for key_id in ids:  # noted again at their next use
                self._noted.pop(key_id, None)
        return len(ids)
