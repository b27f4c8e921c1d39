"""The move driver: a background task of every router that takes each unfinished move through its states.

    copying → fenced → flipped → purged       (or, before the flip: → aborting → failed)

- copying: the target is cleared of leftovers, the source starts logging
  changes, every table is copied in key order, batch by batch, while ingest goes
  on; then the objects; then the changes logged meanwhile. Each batch's cursor
  is saved, so a crash resumes where it stopped.
- fenced: the directory's epoch goes up; once every router has it, the source
  refuses writes (503 + Retry-After), waits for those in flight, and the last
  changes and objects are copied. Both cells count and hash every table and
  every object; they must agree. The target is activated with the source's
  unfinished jobs.
- flipped: the directory (project and keys) points at the target with a new
  epoch, published to every router; the source then answers 421 with the new
  region, and is purged: every row and object, checked, and a deletion receipt
  signed by the source cell is stored with the move.

Bytes go from one cell to the other through this process's memory only, batch
by batch; nothing of a project's data is written here or logged. Values sealed
with the source cell's key (tokens, signing secrets) pass opened and the target
seals them with its own (cell/sealed.py); one that does not open in the source
is a refusal no retry mends, so the move is abandoned with that error. Only one
router drives a move at a time: it holds a session advisory lock on the move's
id for as long as it drives, released by Postgres if the router dies, so
another router picks the move up within a poll. Every step is idempotent, so a
step repeated after a crash, or by the next driver, does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from typing import Any

import asyncpg
import httpx
import msgspec

from common.problems import Problem
from router.cells import Cell
from router.moves import routing, store
from router.moves.settings import MoveSettings
from router.moves.types import ObjectProgress, Progress, TableProgress, Verification
from router.moves.wire import ROUTER, Fatal, StepError, call, copy_object, path
from router.state import RouterState

log = logging.getLogger("relay.router.moves")
LOCK_NAMESPACE = 0x4D4F5645  # "MOVE"
CONFLICT_RETRIES = 5
VERIFY_FAILURES = 2
RETRYABLE = (StepError, Problem, httpx.HTTPError, OSError, TimeoutError, asyncpg.PostgresError,
             asyncpg.InterfaceError)


class _Meta(msgspec.Struct):
    """What the driver reads of a batch of changes (the rows pass through undecoded)."""

    seqs: list[int]
    more: bool


class _Object(msgspec.Struct, omit_defaults=True):
    key: str
    size: int
    sha256: str | None = None


class _Objects(msgspec.Struct):
    data: list[_Object]


class _Sum(msgspec.Struct):
    rows: int
    hash: str


class _ObjectSum(msgspec.Struct):
    count: int
    bytes: int
    hash: str


class _Checksums(msgspec.Struct):
    state: str
    tables: dict[str, _Sum]
    objects: _ObjectSum


class _Placement(msgspec.Struct):
    state: str
    epoch: int | None = None


class _Plan(msgspec.Struct):
    tables: list[dict[str, Any]]


class Mover:
    """Finds unfinished moves and drives each one this router manages to lock."""

    def __init__(self, st: RouterState, settings: MoveSettings) -> None:
        self.st = st
        self.settings = settings
        self.running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.locks: asyncpg.Connection | None = None
        """The connection holding this router's move locks (one per move driven); closed, they are all gone."""
        self.locking = asyncio.Lock()

    async def run(self) -> None:
        """Poll for unfinished moves until cancelled (the router's lifespan ends)."""
        try:
            while True:
                try:
                    rows = await self.st.pool.fetch(
                        "SELECT id FROM moves WHERE state NOT IN ('purged', 'failed') ORDER BY created_at")
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("moves not polled: %s", type(exc).__name__)
                    rows = []
                for row in rows:
                    task = self.running.get(row["id"])
                    if task is None or task.done():
                        self.running[row["id"]] = asyncio.create_task(self._locked(row["id"]))
                for move_id in [m for m, t in self.running.items() if t.done()]:
                    del self.running[move_id]
                await asyncio.sleep(self.settings.poll_seconds)
        finally:
            for task in self.running.values():
                task.cancel()
            for task in self.running.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.locks is not None:
                with contextlib.suppress(Exception):
                    await self.locks.close()

    async def _lock(self, move_id: uuid.UUID) -> asyncpg.Connection | None:
        """The lock connection if this router now holds the move's lock (no other router drives it), else None."""
        async with self.locking:
            try:
                if self.locks is None or self.locks.is_closed():
                    self.locks = await asyncpg.connect(self.st.settings.database_url, timeout=5)
                got = await self.locks.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_NAMESPACE,
                                                str(move_id))
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("move %s not driven: control DB unreachable (%s)", move_id, type(exc).__name__)
                return None
            return self.locks if got else None

    async def _unlock(self, conn: asyncpg.Connection, move_id: uuid.UUID) -> None:
        async with self.locking:
            if not conn.is_closed():
                with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await conn.fetchval("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_NAMESPACE, str(move_id))

    async def _locked(self, move_id: uuid.UUID) -> None:
        """Drive a move if no other router does: a session lock, which Postgres drops if this router dies."""
        conn = await self._lock(move_id)
        if conn is None:
            return
        try:
            await Drive(self, move_id, conn).run()
        except Exception:  # a bug, not a condition: say so, and keep the move (and the lock) quiet for a while
            log.exception("move %s: driver stopped", move_id)
            await asyncio.sleep(self.settings.max_backoff_seconds)
        finally:
            await self._unlock(conn, move_id)


class Drive:
    """One move, driven by this router until it is finished or the lock is lost."""

    def __init__(self, mover: Mover, move_id: uuid.UUID, lock: asyncpg.Connection) -> None:
        self.st = mover.st
        self.settings = mover.settings
        self.move_id = move_id
        self.lock = lock
        self.move: dict[str, Any] = {}
        self.progress = Progress()

    # -- the loop -------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run steps until the move is finished; failures are retried with backoff, some end in an abort."""
        while not self.lock.is_closed():
            row = await store.load(self.st.pool, self.move_id)
            if row is None or row["state"] in ("purged", "failed"):
                return
            self.move = row
            self.progress = msgspec.convert(row["progress"] or {}, Progress)
            try:
                await self.step(row["state"])
                await store.succeeded(self.st.pool, self.move_id)
            except RETRYABLE as exc:
                reason = str(exc) if isinstance(exc, StepError) else f"{type(exc).__name__}: {exc}"
                log.warning("move %s (%s): %s", self.move_id, row["state"], reason)
                attempts = await store.failed_attempt(self.st.pool, self.move_id, reason)
                if (isinstance(exc, Fatal) and not self.progress.activating) or self._fenced_too_long(row):
                    await self.abandon(reason)
                    continue
                await asyncio.sleep(min(self.settings.max_backoff_seconds, 0.5 * 2 ** min(attempts, 8)))

    async def step(self, state: str) -> None:
        """One phase, from wherever it stopped."""
        if state == "copying":
            await self.copying()
        elif state == "fenced":
            await self.fenced()
        elif state == "flipped":
            await self.flipped()
        elif state == "aborting":
            await self.aborting()

    def _fenced_too_long(self, row: dict[str, Any]) -> bool:
        """Fenced for longer than allowed and not yet activated in the target: writes should come back."""
        if row["state"] != "fenced" or row["fenced_at"] is None or self.progress.activating:
            return False
        fenced_for: float = time.time() - row["fenced_at"].timestamp()
        return fenced_for > self.settings.fence_timeout_seconds

    # -- helpers --------------------------------------------------------------------------------------------------

    @property
    def project_id(self) -> uuid.UUID:
        project_id: uuid.UUID = self.move["project_id"]
        return project_id

    @property
    def source(self) -> Cell:
        return self.st.cells[self.move["from_region"]]

    @property
    def target(self) -> Cell:
        return self.st.cells[self.move["to_region"]]

    def path(self, *parts: str) -> str:
        return path(self.project_id, *parts)

    async def save(self, step: str) -> None:
        if self.lock.is_closed():
            raise StepError("lost the move's lock (control DB connection closed)")
        await store.save(self.st.pool, self.move_id, self.progress, step)

    async def placement(self, cell: Cell) -> _Placement:
        response = await call(cell, "GET", self.path("state"), what="reading the project's state")
        return msgspec.json.decode(response.content, type=_Placement)

    # -- copying --------------------------------------------------------------------------------------------------

    async def copying(self) -> None:
        """Bulk copy while the source goes on serving; then fence."""
        if not self.progress.prepared:
            await self.target_call("POST", "prepare", what="clearing the target", fatal_409=True)
            self.progress.prepared = True
            await self.save("prepared")
        await self.source_call("POST", "begin", what="starting change capture", fatal_409=True)
        if not self.progress.tables:
            plan = msgspec.json.decode(
                (await call(self.source, "GET", self.path("plan"), what="reading the plan")).content, type=_Plan)
            sums = await self.checksums(self.source, objects="size")
            self.progress.tables = [TableProgress(name=t["name"], rows=sums.tables[t["name"]].rows)
                                    for t in plan.tables]
            self.progress.objects = ObjectProgress(total=sums.objects.count, bytes=sums.objects.bytes)
            await self.save("planned")
        for i, table in enumerate(self.progress.tables):
            if not table.done:
                await self.copy_table(i)
        if not self.progress.objects.done:
            await self.sync_objects(full=False)
            self.progress.objects.done = True
            await self.save("objects copied")
        await self.drain(None, until_empty=False)
        await self.fence()

    async def copy_table(self, index: int) -> None:
        """Copy one table from its saved cursor on (rows whose parents came later arrive with the change log)."""
        table = self.progress.tables[index]
        retries = 0
        while not table.done:
            params: dict[str, Any] = {"limit": self.settings.batch_rows, "max_bytes": self.settings.batch_bytes}
            if table.cursor:
                params["after"] = table.cursor
            batch = await call(self.source, "GET", self.path("tables", table.name, "rows"), params=params,
                               what=f"exporting {table.name}")
            count = int(batch.headers.get("x-relay-count", "0"))
            cursor = batch.headers.get("x-relay-next")
            if count:
                imported = await call(self.target, "PUT", self.path("tables", table.name, "rows"),
                                      content=batch.content, ok=(200, 409), what=f"importing {table.name}")
                if imported.status_code == 409:
                    # A unique value changed hands in the source since this batch was read: apply the logged
                    # changes of the tables copied so far, then read the batch again.
                    retries += 1
                    if retries > CONFLICT_RETRIES:
                        raise StepError(f"{table.name}: a batch kept conflicting with the target")
                    await self.drain([t.name for t in self.progress.tables[:index + 1]], until_empty=False)
                    continue
            retries = 0
            table.copied += count
            table.cursor = cursor
            table.done = cursor is None
            await self.save(f"copying {table.name}")
            if self.settings.pause_seconds and count:
                await asyncio.sleep(self.settings.pause_seconds)

    async def drain(self, tables: list[str] | None, *, until_empty: bool) -> None:
        """Apply the source's logged changes to the target, oldest first, and acknowledge them."""
        while True:
            batch = await call(self.source, "POST", self.path("changes"),
                               json={"tables": tables, "limit": self.settings.change_batch,
                                     "max_bytes": self.settings.batch_bytes},
                               what="reading logged changes")
            meta = msgspec.json.decode(batch.content, type=_Meta)
            if not meta.seqs:
                return
            await call(self.target, "POST", self.path("changes", "apply"), content=batch.content,
                       what="applying changes")
            await call(self.source, "POST", self.path("changes", "ack"), json={"seqs": meta.seqs},
                       what="acknowledging changes")
            self.progress.changes_applied += len(meta.seqs)
            await self.save("applying changes")
            if not meta.more and not until_empty:
                return

    async def sync_objects(self, *, full: bool) -> None:
        """Copy objects the target lacks (or holds in another size; with `full`, another hash), and with `full`
        remove from the target those the source no longer has."""
        params = {"hash": "true" if full else "false"}
        source = msgspec.json.decode((await call(self.source, "GET", self.path("objects"), params=params,
                                                 what="listing objects")).content, type=_Objects).data
        there = {o.key: o for o in msgspec.json.decode((await call(self.target, "GET", self.path("objects"),
                                                                   params=params, what="listing objects")).content,
                                                       type=_Objects).data}
        for obj in source:
            have = there.get(obj.key)
            if have is not None and have.size == obj.size and (not full or have.sha256 == obj.sha256):
                continue
            size = await copy_object(self.source, self.target, self.project_id, obj.key)
            self.progress.objects.copied += 1
            self.progress.objects.copied_bytes += size
            await self.save("copying objects")
        if full:
            for key in there.keys() - {o.key for o in source}:
                await call(self.target, "DELETE", self.path("objects", "content"), params={"key": key}, ok=(204,),
                           what="removing an object")

    async def fence(self) -> None:
        """Raise the directory's epoch and mark the move fenced, in one transaction; publish it."""
        async with self.st.pool.acquire() as conn, conn.transaction():
            state = await conn.fetchval("SELECT state FROM moves WHERE id = $1 FOR UPDATE", self.move_id)
            if state != "copying":
                return
            epoch = await conn.fetchval(
                """UPDATE project_directory SET state = 'fenced', epoch = epoch + 1, updated_at = now()
                    WHERE id = $1 RETURNING epoch""", self.project_id)
            await conn.execute(
                """UPDATE moves SET state = 'fenced', fence_epoch = $2, fenced_at = now(), step = 'fencing',
                                    updated_at = now() WHERE id = $1""", self.move_id, epoch)
        await routing.announce(self.st, self.project_id)

    # -- fenced ---------------------------------------------------------------------------------------------------

    async def fenced(self) -> None:
        """Final delta, verification and activation of the target; then the flip."""
        fence_epoch: int = self.move["fence_epoch"]
        flip_epoch = fence_epoch + 1
        await routing.announce(self.st, self.project_id)
        target = await self.placement(self.target)
        if not (target.state == "active" and (target.epoch or 0) >= flip_epoch):
            await asyncio.sleep(self.settings.propagation_seconds)  # every router sends the new epoch first
            await self.source_call("POST", "fence", json={"epoch": fence_epoch}, what="fencing the source")
            await self.save("final delta")
            await self.drain(None, until_empty=True)
            await self.sync_objects(full=True)
            await self.drain(None, until_empty=True)
            await self.verify()
            jobs = await call(self.source, "GET", self.path("jobs"), what="reading pending jobs")
            pending = msgspec.json.decode(jobs.content)
            self.progress.activating = True  # from here on the move only goes forward
            await self.save("activating the target")
            await call(self.target, "POST", self.path("activate"), what="activating the target",
                       json={"epoch": flip_epoch, "last_outbox_id": pending["last_outbox_id"],
                             "jobs": pending["jobs"], "move_id": str(self.move_id),
                             "from_region": self.move["from_region"],
                             "requested_by": str(self.move["requested_by"]) if self.move["requested_by"] else None})
            await self.save("activated")
        await self.flip(flip_epoch)

    async def checksums(self, cell: Cell, *, objects: str, nonce: str = "") -> _Checksums:
        response = await call(cell, "GET", self.path("checksums"), params={"objects": objects, "nonce": nonce},
                              what="computing checksums")
        return msgspec.json.decode(response.content, type=_Checksums)

    async def verify(self) -> None:
        """Both cells count and hash every table and every object; any difference stops the move.

        Secrets, sealed with each cell's own key, are compared opened, by an HMAC keyed with a nonce of this
        comparison (cell/sealed.py)."""
        nonce = secrets.token_urlsafe(24)
        source, target = await asyncio.gather(self.checksums(self.source, objects="hash", nonce=nonce),
                                              self.checksums(self.target, objects="hash", nonce=nonce))
        mismatched = sorted(name for name, s in source.tables.items() if target.tables.get(name) != s)
        mismatched += sorted(set(target.tables) - set(source.tables))
        if source.objects != target.objects:
            mismatched.append("objects")
        self.progress.verify = Verification(
            ok=not mismatched, tables=len(source.tables), rows=sum(s.rows for s in source.tables.values()),
            objects=source.objects.count, bytes=source.objects.bytes, mismatched=mismatched)
        if mismatched:
            self.progress.verify_failures += 1
            await self.save("verification failed")
            message = f"checksums differ between {self.move['from_region']} and {self.move['to_region']}: " \
                      + ", ".join(mismatched)
            if self.progress.verify_failures >= VERIFY_FAILURES:
                raise Fatal(message)
            raise StepError(message)
        await self.save("verified")

    async def flip(self, epoch: int) -> None:
        """Point the directory (project and keys) at the target with the new epoch; publish it."""
        to_region = self.move["to_region"]
        async with self.st.pool.acquire() as conn, conn.transaction():
            state = await conn.fetchval("SELECT state FROM moves WHERE id = $1 FOR UPDATE", self.move_id)
            if state != "fenced":
                return
            await conn.execute(
                """UPDATE project_directory SET region = $2, epoch = $3, state = 'flipped', updated_at = now()
                    WHERE id = $1""", self.project_id, to_region, epoch)
            await conn.execute("UPDATE key_directory SET region = $2, updated_at = now() WHERE project_id = $1",
                               self.project_id, to_region)
            await conn.execute(
                """UPDATE moves SET state = 'flipped', flip_epoch = $2, flipped_at = now(), step = 'flipped',
                                    updated_at = now() WHERE id = $1""", self.move_id, epoch)
        await routing.announce(self.st, self.project_id)

    # -- flipped --------------------------------------------------------------------------------------------------

    async def flipped(self) -> None:
        """Release and purge the source; keep its signed receipt; the project is active in its new region."""
        epoch: int = self.move["flip_epoch"]
        to_region = self.move["to_region"]
        await routing.announce(self.st, self.project_id)
        await asyncio.sleep(self.settings.propagation_seconds)  # every router routes to the target first
        await self.source_call("POST", "release", json={"region": to_region, "epoch": epoch},
                               what="releasing the source")
        await self.sync_revocations()
        await self.save("purging the source")
        response = await call(self.source, "POST", self.path("purge"), what="purging the source",
                              json={"move_id": str(self.move_id), "region": to_region, "epoch": epoch})
        receipt = msgspec.json.decode(response.content)
        async with self.st.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE moves SET state = 'purged', receipt = $2, step = 'done', finished_at = now(),
                                    updated_at = now() WHERE id = $1 AND state = 'flipped'""", self.move_id, receipt)
            await conn.execute("UPDATE project_directory SET state = 'active', updated_at = now()"
                               " WHERE id = $1 AND state = 'flipped'", self.project_id)
        await routing.announce(self.st, self.project_id)
        log.info("move %s finished: project now in %s", self.move_id, to_region)

    async def sync_revocations(self) -> None:
        """Keys revoked while the move ran may have reached only the source: revoke them in the target too."""
        revoked = await self.st.pool.fetch(
            "SELECT key_id FROM key_directory WHERE project_id = $1 AND revoked", self.project_id)
        for row in revoked:
            response = await self.target.call(
                "DELETE", f"/internal/projects/{self.project_id}/api-keys/{row['key_id']}", ROUTER)
            if response.status_code not in (200, 204, 404):
                raise StepError(f"{self.target.region} answered {response.status_code} revoking a key")

    # -- abandoning -----------------------------------------------------------------------------------------------

    async def abandon(self, reason: str) -> None:
        """Give up before the flip: the source serves writes again, the target's copy goes."""
        async with self.st.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE moves SET state = 'aborting', step = 'abandoning', last_error = $2, updated_at = now()
                    WHERE id = $1 AND state IN ('copying', 'fenced')""", self.move_id, f"abandoned: {reason}"[:1000])

    async def aborting(self) -> None:
        """Undo a move that never reached activation: the source first (writes come back), then the target.

        Each call is idempotent. A 409 means the cell holds the project in a state this move did not make
        (the reason it was abandoned); it is left as it is.
        """
        await call(self.source, "POST", self.path("unfence"), ok=(200, 404, 409), what="unfencing the source")
        async with self.st.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE project_directory SET state = 'active', updated_at = now()"
                               " WHERE id = $1 AND state IN ('copying', 'fenced')", self.project_id)
        await routing.announce(self.st, self.project_id)
        await call(self.target, "POST", self.path("discard"), ok=(200, 409), what="removing the target's copy")
        await self.st.pool.execute(
            "UPDATE moves SET state = 'failed', step = 'abandoned', finished_at = now(), updated_at = now()"
            " WHERE id = $1 AND state = 'aborting'", self.move_id)
        log.warning("move %s abandoned; the project stays in %s", self.move_id, self.move["from_region"])

    # -- calls ----------------------------------------------------------------------------------------------------

    async def source_call(self, method: str, what_path: str, *, what: str, json: Any = None,
                          fatal_409: bool = False) -> httpx.Response:
        return await self._call(self.source, method, what_path, what=what, json=json, fatal_409=fatal_409)

    async def target_call(self, method: str, what_path: str, *, what: str, json: Any = None,
                          fatal_409: bool = False) -> httpx.Response:
        return await self._call(self.target, method, what_path, what=what, json=json, fatal_409=fatal_409)

    async def _call(self, cell: Cell, method: str, what_path: str, *, what: str, json: Any,
                    fatal_409: bool) -> httpx.Response:
        response = await call(cell, method, self.path(what_path), json=json, ok=(200, 409), what=what)
        if response.status_code == 409:
            error = StepError(f"{cell.region} answered 409 {what}: "
                              + str(msgspec.json.decode(response.content).get("detail", "")))
            raise Fatal(str(error)) if fatal_409 else error
        return response
