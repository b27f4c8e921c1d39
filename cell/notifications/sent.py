"""The ledger of what an event already sent, so a retried or repeated job sends nothing twice.

Runs of one event take turns on a Postgres advisory lock held for the whole
run (released when the connection goes back to the pool, or dies with it), so
two workers handling the same event at once cannot both send; each message is
recorded right after the server accepted it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import uuid
from types import TracebackType

import asyncpg

from cell.settings import CellSettings

SLACK = "slack"
EMAIL = "email"


def recipient_key(settings: CellSettings, address: str) -> str:
    """What the ledger keeps of an email address: a hash keyed with the cell's key, so the table names nobody."""
    key = hashlib.sha256(b"relay/notifications/recipient|" + settings.secret_key.encode()).digest()
    return hmac.new(key, address.strip().lower().encode(), hashlib.sha256).hexdigest()


class Ledger:
    """What one event of a project already sent, held under the event's lock while the job runs."""

    def __init__(self, conn: asyncpg.Connection, project_id: uuid.UUID, event: str) -> None:
        self.conn = conn
        self.project_id = project_id
        self.event = event
        self._lock = f"notifications:{project_id}:{event}"
        self._sent: set[tuple[str, str]] = set()

    async def __aenter__(self) -> Ledger:
        await self.conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", self._lock)
        rows = await self.conn.fetch(
            "SELECT channel, recipient FROM notifications_sent WHERE project_id = $1 AND event = $2",
            self.project_id, self.event)
        self._sent = {(r["channel"], r["recipient"]) for r in rows}
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", self._lock)

    def sent(self, channel: str, recipient: str) -> bool:
        """Whether this message went out already."""
        return (channel, recipient) in self._sent

    async def record(self, channel: str, recipient: str, user_id: uuid.UUID | None = None) -> None:
        """Note a message the server accepted, before anything else is sent."""
        with contextlib.suppress(asyncpg.ForeignKeyViolationError):  # the person was erased meanwhile
            await self.conn.execute(
                """INSERT INTO notifications_sent (project_id, event, channel, recipient, user_id)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
                self.project_id, self.event, channel, recipient, user_id)
        self._sent.add((channel, recipient))
