"""The routing directory: key prefix → project → region, held in memory.

Loaded from the control database at start (or from the saved snapshot when the
database is down), kept fresh by change messages on the router's Redis (every
router process applies a change within milliseconds of its publication) and
by a periodic full reload as the backstop. Routing reads only this map, so
known keys and projects keep routing while the control DB or Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("relay.router.directory")
CHANNEL = "relay:directory"
NEGATIVE_TTL = 5.0


KEY_COLUMNS = "key_prefix, key_id, project_id, region, revoked, key_digest AS digest, scopes, expires_at"
"""The columns of `key_directory` a KeyEntry holds, for SELECT and RETURNING clauses."""


class KeyEntry(msgspec.Struct, frozen=True):
    """A key as the router knows it: never the secret, only its keyed digest (see `common.keys.digest`).

    `digest` is None for a key created before the router kept digests: the key's cell verifies it once and
    the router records the digest then (`router.access`). `scopes` and `expires_at` let the router enforce
    them at the edge.
    """

    key_prefix: str
    key_id: uuid.UUID
    project_id: uuid.UUID
    region: str
    revoked: bool
    digest: str | None = None
    scopes: list[str] = msgspec.field(default_factory=list)
    expires_at: datetime | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> KeyEntry:
        """The entry of a `key_directory` row selected with KEY_COLUMNS."""
        fields = dict(row)
        fields["scopes"] = list(fields.get("scopes") or [])
        return cls(**fields)


class ProjectEntry(msgspec.Struct, frozen=True):
    """A project's home."""

    id: uuid.UUID
    name: str
    region: str
    state: str
    epoch: int


class Change(msgspec.Struct, frozen=True, omit_defaults=True):
    """One directory change as published on Redis; `gone` removes the entry."""

    key: KeyEntry | None = None
    project: ProjectEntry | None = None
    gone: bool = False


class Snapshot(msgspec.Struct):
    """The directory as saved on disk (digests included: useless without the key pepper)."""

    keys: list[KeyEntry]
    projects: list[ProjectEntry]


class Directory:
    """The in-memory map every routed request consults."""

    def __init__(self, snapshot_path: str = "") -> None:
        self.keys: dict[str, KeyEntry] = {}
        self.projects: dict[uuid.UUID, ProjectEntry] = {}
        self._negative: dict[str, float] = {}
        self.verifying: dict[str, asyncio.Future[KeyEntry | None]] = {}
        """Keys without a digest being verified by their cell right now (router.access), by fingerprint."""
        self.snapshot_path = Path(snapshot_path) if snapshot_path else None
        self.loaded_at = 0.0

    def key(self, prefix: str) -> KeyEntry | None:
        """The entry for a key prefix, if known."""
        return self.keys.get(prefix)

    def unknown_recently(self, prefix: str) -> bool:
        """Whether this prefix was looked up and not found in the last few seconds."""
        seen = self._negative.get(prefix)
        return seen is not None and time.monotonic() - seen < NEGATIVE_TTL

    def remember_unknown(self, prefix: str) -> None:
        if len(self._negative) > 100_000:  # bounded: guessing keys must not grow memory
            self._negative.clear()
        self._negative[prefix] = time.monotonic()

    def apply(self, change: Change) -> None:
        """Apply one change from this or another router process."""
        if change.key is not None:
            if change.gone:
                self.keys.pop(change.key.key_prefix, None)
            else:
                self.keys[change.key.key_prefix] = change.key
                self._negative.pop(change.key.key_prefix, None)
        if change.project is not None:
            if change.gone:
                self.projects.pop(change.project.id, None)
            else:
                self.projects[change.project.id] = change.project

    async def load(self, pool: asyncpg.Pool) -> None:
        """Replace the map with the control database's truth, and save the snapshot."""
        keys = await pool.fetch(f"SELECT {KEY_COLUMNS} FROM key_directory")
        projects = await pool.fetch("SELECT id, name, region, state::text, epoch FROM project_directory")
        self.keys = {r["key_prefix"]: KeyEntry.of(r) for r in keys}
        self.projects = {r["id"]: ProjectEntry(**dict(r)) for r in projects}
        self.loaded_at = time.time()
        self._save()

    async def fetch_key(self, pool: asyncpg.Pool, prefix: str) -> KeyEntry | None:
        """Look a prefix up in the control DB (a key created a moment ago on another router)."""
        row = await pool.fetchrow(f"SELECT {KEY_COLUMNS} FROM key_directory WHERE key_prefix = $1", prefix)
        if row is None:
            self.remember_unknown(prefix)
            return None
        entry = KeyEntry.of(row)
        self.keys[prefix] = entry
        return entry

    def _save(self) -> None:
        if self.snapshot_path is None:
            return
        data = msgspec.json.encode(Snapshot(list(self.keys.values()), list(self.projects.values())))
        # Unique per process: router pods may share the snapshot's volume (infra/k8s), and os.replace is atomic.
        tmp = self.snapshot_path.with_suffix(f".{socket.gethostname()}.{os.getpid()}.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, self.snapshot_path)

    def restore(self) -> bool:
        """Load the saved snapshot (control DB unreachable at start); False when there is none."""
        if self.snapshot_path is None or not self.snapshot_path.exists():
            return False
        snap = msgspec.json.decode(self.snapshot_path.read_bytes(), type=Snapshot)
        self.keys = {k.key_prefix: k for k in snap.keys}
        self.projects = {p.id: p for p in snap.projects}
        self.loaded_at = self.snapshot_path.stat().st_mtime
        return True

    async def follow(self, redis: Redis) -> None:
        """Apply changes published by any router process, reconnecting after Redis outages."""
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.apply(msgspec.json.decode(message["data"], type=Change))
            except (RedisError, OSError) as exc:
                log.warning("directory feed interrupted (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def reconcile(self, pool: asyncpg.Pool, every: float) -> None:
        """Reload everything periodically: the backstop for a missed change message."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.load(pool)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("directory reload failed (%s); routing on the map in memory", type(exc).__name__)


async def publish(redis: Redis, directory: Directory, change: Change, *more: Change) -> None:
    """Apply changes locally at once, all of them before the first await (a request this process serves
    meanwhile sees none or all: a project's keys and the project forgotten together), then tell the other
    router processes."""
    changes = (change, *more)
    for one in changes:
        directory.apply(one)
    with contextlib.suppress(RedisError, OSError):  # the periodic reload still carries them
        for one in changes:
            await redis.publish(CHANNEL, msgspec.json.encode(one))
