"""The SQL of a move, generic over the tables of `schema.Plan`: export, import, change capture, checksums, purge.

Rows travel as JSON text produced and parsed by Postgres (`to_jsonb`,
`jsonb_populate_recordset`), in UTC, so this module never decodes customer
data: it hands bytes from the database to the router and back. The one exception
is the few tables holding values sealed with the cell's key (cell/sealed.py):
their rows are decoded to open those values for the journey and seal them again
on arrival, and their checksums hash the opened values apart. Every
statement names the project (`project_id = $1`, or `id` for `projects`), and
every write of a move runs with `relay.move = on`, which the guard lets pass.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from typing import Any

import asyncpg
import msgspec

from cell import sealed
from cell.moves.schema import Plan, Table, ident
from cell.moves.types import Changes, Job, ObjectInfo, ObjectSum, PendingJobs, TableSum
from cell.projects import secret as project_secret
from cell.storage import ObjectStore, project_key
from common.problems import Problem

DELETE_BATCH = 5000
HASH_CONCURRENCY = 8
MOVING = ("copying", "fencing", "fenced")


async def _utc(conn: asyncpg.Connection) -> None:
    """Timestamps as text in UTC, whatever the server's time zone, so both cells write the same bytes."""
    await conn.execute("SET LOCAL TimeZone = 'UTC'")


async def bypass(conn: asyncpg.Connection) -> None:
    """Mark this transaction as the move's own: the guard lets its writes through."""
    await conn.execute("SET LOCAL relay.move = 'on'")


def encode_cursor(key_json: str) -> str:
    """A row key as an opaque cursor (header-safe)."""
    return base64.urlsafe_b64encode(key_json.encode()).decode()


def decode_cursor(cursor: str) -> str:
    """The JSON array text behind a cursor; 422 for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not isinstance(msgspec.json.decode(text), list):
            raise ValueError
    except (ValueError, msgspec.DecodeError):
        raise Problem(422, "malformed cursor") from None
    return text


# -- Placement --------------------------------------------------------------------------------------------------

async def state_of(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID) -> asyncpg.Record | None:
    """The project's row state and epoch here, or None."""
    return await conn.fetchrow("SELECT state, epoch FROM projects WHERE id = $1", project_id)


async def require_state(conn: asyncpg.Connection, project_id: uuid.UUID, *states: str) -> str:
    """The project's state, locked against state changes; 409 unless it is one of `states`."""
    state: str | None = await conn.fetchval("SELECT state FROM projects WHERE id = $1 FOR SHARE", project_id)
    if state not in states:
        raise Problem(409, f"the project is {state or 'absent'} in this region, not {' or '.join(states)}")
    return state


# -- Export and import ----------------------------------------------------------------------------------------

async def export_rows(conn: asyncpg.Connection, table: Table, project_id: uuid.UUID, after: str | None,
                      limit: int, max_bytes: int, secret_key: str) -> tuple[bytes, int, str | None]:
    """Rows after the cursor in key order, as a JSON array; with the count and the next cursor (None: done).

    Sealed values are opened for the target to seal with its own key (`sealed.carry`)."""
    where = f"t.{ident(table.owner_column)} = $1"
    args: list[Any] = [project_id, limit]
    if after is not None:
        where += f" AND ({table.key_tuple}) > ({table.key_of('$3::text::jsonb')})"
        args.append(after)
    async with conn.transaction(readonly=True):
        await _utc(conn)
        rows = await conn.fetch(
            f"SELECT {table.row_json} AS row, {table.key_json} AS key FROM {table.sql} t"
            f" WHERE {where} ORDER BY {table.key_tuple} LIMIT $2", *args)
    taken: list[str] = []
    size = 0
    for row in rows:
        if taken and size + len(row["row"]) > max_bytes:
            break
        taken.append(row["row"])
        size += len(row["row"])
    complete = len(rows) < limit and len(taken) == len(rows)
    cursor = None if complete or not taken else encode_cursor(rows[len(taken) - 1]["key"])
    taken = sealed.carry(secret_key, project_id, table.name, taken)
    return ("[" + ",".join(taken) + "]").encode(), len(taken), cursor


def _parents_present(table: Table) -> str:
    """SQL: the row's parents (by every foreign key to another copied table) exist here, or it names none.

    A row whose parent is missing was written after its parent's table was copied, so both are in the
    source's change log and arrive with it; skipping it now keeps the bulk copy from failing on it.
    """
    checks = []
    for ref in table.references:
        unset = " OR ".join(f"r.{ident(c)} IS NULL" for c in ref.columns)
        match = " AND ".join(f"p.{ident(pc)} = r.{ident(c)}" for c, pc in zip(ref.columns, ref.parent_columns,
                                                                               strict=True))
        checks.append(f"({unset} OR EXISTS (SELECT 1 FROM {ident(ref.parent)} p WHERE {match}))")
    return " AND ".join(checks) or "true"


def _upsert_sql(table: Table) -> str:
    """INSERT … SELECT from a JSON array ($1), only rows of the project ($2) whose parents are here, upserted by
    primary key."""
    cols = ", ".join(ident(c) for c in table.columns)
    picked = ", ".join(f"r.{ident(c)}" for c in table.columns)
    updates = [c for c in table.columns if c not in table.key] or [table.key[0]]
    conflict = (f"ON CONFLICT ({', '.join(ident(c) for c in table.key)}) DO UPDATE SET "
                + ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in updates))
    extra_cols = extra_vals = ""
    if table.name == "projects":  # arrives in this cell's region, not served until activated
        extra_cols, extra_vals = ", region, state", ", $3::text::region, 'importing'"
        conflict += " WHERE t.state = 'importing'"
    owner = ident(table.owner_column)
    return f"""WITH src AS (SELECT * FROM jsonb_populate_recordset(NULL::{table.sql}, $1::text::jsonb)),
                    ins AS (INSERT INTO {table.sql} AS t ({cols}{extra_cols})
                            SELECT {picked}{extra_vals} FROM src r WHERE r.{owner} = $2 AND {_parents_present(table)}
                            {conflict} RETURNING 1)
               SELECT (SELECT count(*) FROM src) AS given,
                      (SELECT count(*) FROM src r WHERE r.{owner} IS DISTINCT FROM $2) AS foreign_rows,
                      (SELECT count(*) FROM ins) AS written"""


async def upsert(conn: asyncpg.Connection, table: Table, project_id: uuid.UUID, region: str, rows: str,
                 secret_key: str) -> int:
    """Write rows (JSON array text) in the caller's move transaction, carried secrets sealed with this cell's
    key first; 422 for another project's rows."""
    args: list[Any] = [sealed.seal_carried(secret_key, project_id, table.name, rows), project_id]
    if table.name == "projects":
        args.append(region)
    try:
        result = await conn.fetchrow(_upsert_sql(table), *args)
    except (asyncpg.ForeignKeyViolationError, asyncpg.UniqueViolationError) as exc:
        # A unique value changed hands in the source since this batch was read (its previous owner is still
        # here): the router applies the logged changes and reads the batch again.
        raise Problem(409, f"{table.name}: {type(exc).__name__}; apply pending changes and retry") from exc
    except (asyncpg.DataError, asyncpg.NotNullViolationError, asyncpg.CheckViolationError) as exc:
        raise Problem(422, f"{table.name}: rows do not fit this cell's schema ({type(exc).__name__})") from exc
    assert result is not None
    if result["foreign_rows"]:
        raise Problem(422, f"{table.name}: rows of another project")
    if table.name == "projects" and result["written"] == 0:
        raise Problem(409, "the project is already served in this region")
    written: int = result["written"]
    return written


async def import_rows(pool: asyncpg.Pool, plan: Plan, table: Table, project_id: uuid.UUID, region: str,
                      rows: str, secret_key: str) -> int:
    """One exported batch into this (target) cell, idempotently, its secrets sealed with this cell's key
    (a project secret still plain in the source, from before migration 0017, too)."""
    async with pool.acquire() as conn, conn.transaction():
        await bypass(conn)
        if table.name != "projects":
            await require_state(conn, project_id, "importing")
        written = await upsert(conn, table, project_id, region, rows, secret_key)
        if table.name == "projects":
            await project_secret.seal_in(conn, secret_key, project_id)
        return written


async def delete_keys(conn: asyncpg.Connection, table: Table, project_id: uuid.UUID, keys: str) -> int:
    """Delete rows by primary key (JSON array of key arrays) in the caller's move transaction."""
    match = " AND ".join(f"t.{ident(c)} = (x ->> {i})::{table.types[c]}" for i, c in enumerate(table.key))
    status: str = await conn.execute(
        f"DELETE FROM {table.sql} t USING jsonb_array_elements($2::text::jsonb) x"
        f" WHERE t.{ident(table.owner_column)} = $1 AND {match}", project_id, keys)
    return int(status.rsplit(" ", 1)[-1])


# -- Change capture -----------------------------------------------------------------------------------------------

async def read_changes(pool: asyncpg.Pool, plan: Plan, project_id: uuid.UUID, tables: list[str] | None,
                       limit: int, max_bytes: int, secret_key: str) -> bytes:
    """The oldest logged changes, each resolved to the row as it is now (or its key, when it is gone).

    One snapshot reads the log and the rows, so a change and its row agree. Changes of tables the plan
    does not copy are acknowledged with nothing to apply. A batch past `max_bytes` is read again with half
    as many changes (down to one). Sealed values are opened, as in an export (`sealed.carry`).
    """
    while True:
        body, read = await _read_changes(pool, plan, project_id, tables, limit, secret_key)
        if len(body) <= max_bytes or read <= 1:
            return body
        limit = read // 2


async def _read_changes(pool: asyncpg.Pool, plan: Plan, project_id: uuid.UUID, tables: list[str] | None,
                        limit: int, secret_key: str) -> tuple[bytes, int]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await _utc(conn)
        log = await conn.fetch(
            """SELECT seq, table_name, pk::text AS pk FROM move_changes
                WHERE project_id = $1 AND ($2::text[] IS NULL OR table_name = ANY($2::text[]))
                ORDER BY seq LIMIT $3""", project_id, tables, limit)
        keys: dict[str, dict[str, None]] = {}
        for entry in log:
            keys.setdefault(entry["table_name"], {})[entry["pk"]] = None
        parts = []
        for table in plan.tables:
            wanted = keys.get(table.name)
            if not wanted:
                continue
            given = "[" + ",".join(wanted) + "]"
            owner = f"t.{ident(table.owner_column)} = $1"
            rows = await conn.fetch(
                f"""SELECT {table.row_json} AS row FROM {table.sql} t
                     WHERE {owner} AND ({table.key_tuple}) IN
                           (SELECT {table.key_of('x')} FROM jsonb_array_elements($2::text::jsonb) x)""",
                project_id, given)
            gone = await conn.fetch(
                f"""SELECT x::text AS key FROM jsonb_array_elements($2::text::jsonb) x
                     WHERE NOT EXISTS (SELECT 1 FROM {table.sql} t
                                        WHERE {owner} AND ({table.key_tuple}) = ({table.key_of('x')}))""",
                project_id, given)
            name = msgspec.json.encode(table.name).decode()
            found = ",".join(sealed.carry(secret_key, project_id, table.name, [r["row"] for r in rows]))
            deleted = ",".join(r["key"] for r in gone)
            parts.append(f'{{"table":{name},"rows":[{found}],"deleted":[{deleted}]}}')
    seqs = ",".join(str(e["seq"]) for e in log)
    more = "true" if len(log) == limit else "false"
    return f'{{"seqs":[{seqs}],"more":{more},"tables":[{",".join(parts)}]}}'.encode(), len(log)


async def apply_changes(pool: asyncpg.Pool, plan: Plan, project_id: uuid.UUID, region: str,
                        changes: Changes, secret_key: str) -> tuple[int, int]:
    """Apply a batch of changes to the target in one transaction: deletes children first, then upserts (carried
    secrets sealed with this cell's key)."""
    by_name = {c.table: c for c in changes.tables}
    written = deleted = 0
    async with pool.acquire() as conn, conn.transaction():
        await bypass(conn)
        await require_state(conn, project_id, "importing")
        for table in reversed(plan.tables):
            entry = by_name.get(table.name)
            if entry is not None and entry.deleted and table.name != "projects":
                deleted += await delete_keys(conn, table, project_id,
                                             "[" + ",".join(bytes(k).decode() for k in entry.deleted) + "]")
        for table in plan.tables:
            entry = by_name.get(table.name)
            if entry is not None and entry.rows:
                written += await upsert(conn, table, project_id, region,
                                        "[" + ",".join(bytes(r).decode() for r in entry.rows) + "]", secret_key)
    return written, deleted


async def ack_changes(pool: asyncpg.Pool, project_id: uuid.UUID, seqs: list[int]) -> int:
    """Forget changes the target has applied (by seq, so a change committed meanwhile is never skipped)."""
    status: str = await pool.execute("DELETE FROM move_changes WHERE project_id = $1 AND seq = ANY($2::bigint[])",
                                     project_id, seqs)
    return int(status.rsplit(" ", 1)[-1])


# -- Checksums and objects ------------------------------------------------------------------------------------

async def table_sums(pool: asyncpg.Pool, plan: Plan, project_id: uuid.UUID, secret_key: str,
                     nonce: str) -> dict[str, TableSum]:
    """Per table: the project's row count and the sum of 64-bit hashes of each row's canonical JSON text.

    Values sealed with the cell's key differ between cells by design, so they leave the row text and a table
    holding them adds `+` and a keyed digest of the opened values (`sealed.digest`, keyed with `nonce`).
    """
    sums: dict[str, TableSum] = {}
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await _utc(conn)
        for table in plan.tables:
            hashed = f"{sealed.without_sealed(table.name, table.row_jsonb)}::text"
            owner = f"t.{ident(table.owner_column)} = $1"
            row = await conn.fetchrow(
                f"""SELECT count(*) AS n,
                           coalesce(sum(('x' || left(md5({hashed}), 16))::bit(64)::bigint), 0)::text AS h
                      FROM {table.sql} t WHERE {owner}""", project_id)
            assert row is not None
            h: str = row["h"]
            if sealed.fields_of(table.name):
                rows = await conn.fetch(f"SELECT {table.key_json} AS key, {table.row_json} AS row"
                                        f" FROM {table.sql} t WHERE {owner}", project_id)
                h += "+" + str(sealed.digest(secret_key, project_id, table.name,
                                             ((r["key"], r["row"]) for r in rows), nonce))
            sums[table.name] = TableSum(rows=row["n"], hash=h)
    return sums


def prefix(project_id: uuid.UUID) -> str:
    """Where every object of the project lives."""
    return project_key(project_id) + "/"


def check_key(project_id: uuid.UUID, key: str) -> str:
    """An object key of this project, or 422 (never a path outside its prefix)."""
    parts = key.split("/")
    if not key.startswith(prefix(project_id)) or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise Problem(422, "not an object key of this project")
    return key


async def sha256_of(store: ObjectStore, key: str) -> str:
    """The object's SHA-256, read as a stream."""
    digest = hashlib.sha256()
    async for chunk in store.stream(key):
        digest.update(chunk)
    return digest.hexdigest()


async def list_objects(store: ObjectStore, project_id: uuid.UUID, *, with_hash: bool) -> list[ObjectInfo]:
    """The project's objects in key order, with their SHA-256 when asked (that reads every byte)."""
    found = sorted(await store.keys(prefix(project_id)))
    if not with_hash:
        return [ObjectInfo(key=k, size=s) for k, s in found]
    reading = asyncio.Semaphore(HASH_CONCURRENCY)

    async def hashed(key: str) -> str:
        async with reading:
            return await sha256_of(store, key)

    hashes = await asyncio.gather(*(hashed(k) for k, _ in found)) if found else []
    return [ObjectInfo(key=k, size=s, sha256=h) for (k, s), h in zip(found, hashes, strict=True)]


def object_sum(objects: list[ObjectInfo]) -> ObjectSum:
    """Count, bytes and one hash over every (key, size, sha256)."""
    digest = hashlib.sha256()
    for o in objects:
        digest.update(f"{o.key}\0{o.size}\0{o.sha256 or ''}\n".encode())
    return ObjectSum(count=len(objects), bytes=sum(o.size for o in objects), hash=digest.hexdigest())


# -- Outbox -------------------------------------------------------------------------------------------------------

async def pending_jobs(pool: asyncpg.Pool, project_id: uuid.UUID) -> PendingJobs:
    """The project's unfinished follow-up work: unrelayed rows whole, relayed ones by unfinished consumer."""
    rows = await pool.fetch(
        """SELECT kind, payload, only_job, pending_jobs, dispatched_at IS NULL AS waiting FROM outbox
            WHERE project_id = $1 AND (dispatched_at IS NULL OR pending_jobs <> '{}') ORDER BY id""", project_id)
    jobs: list[Job] = []
    for r in rows:
        if r["waiting"]:
            jobs.append(Job(kind=r["kind"], payload=r["payload"], only_job=r["only_job"]))
        else:
            jobs.extend(Job(kind=r["kind"], payload=r["payload"], only_job=name) for name in r["pending_jobs"])
    last: int = await pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    return PendingJobs(last_outbox_id=last, jobs=jobs)


async def add_jobs(conn: asyncpg.Connection, project_id: uuid.UUID, last_outbox_id: int, jobs: list[Job]) -> None:
    """Re-create the source's pending jobs here, past every outbox id the source issued.

    Ids the source issued live on in copied rows (`webhook_deliveries.event_key = outbox:<id>`); numbering
    this cell's outbox past them keeps a future event of the project from colliding with a copied key.
    """
    if last_outbox_id:
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('outbox', 'id'),"
            " greatest(nextval(pg_get_serial_sequence('outbox', 'id')), $1))", last_outbox_id)
    if jobs:
        await conn.executemany(
            "INSERT INTO outbox (project_id, kind, payload, only_job) VALUES ($1, $2, $3, $4)",
            [(project_id, j.kind, j.payload, j.only_job) for j in jobs])


# -- Purge --------------------------------------------------------------------------------------------------------

async def delete_batch(pool: asyncpg.Pool, table: str, project_id: uuid.UUID) -> int:
    """Delete up to DELETE_BATCH of the project's rows from one table, in a transaction of its own; how many went.

    Each batch commits, so a purge cut short keeps what it did, and the next call carries on."""
    async with pool.acquire() as conn, conn.transaction():
        await bypass(conn)
        status: str = await conn.execute(
            f"""DELETE FROM {ident(table)} WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM {ident(table)} WHERE project_id = $1 LIMIT {DELETE_BATCH}))""",
            project_id)
    return int(status.rsplit(" ", 1)[-1])


async def delete_project_rows(pool: asyncpg.Pool, plan: Plan, project_id: uuid.UUID) -> dict[str, int]:
    """Delete the project's rows from every table that names it, children first, in bounded batches."""
    deleted: dict[str, int] = {}
    for name in plan.tenant_tables:
        total = 0
        while True:
            n = await delete_batch(pool, name, project_id)
            total += n
            if n < DELETE_BATCH:
                break
        deleted[name] = total
    return deleted


async def remaining_rows(conn: asyncpg.Connection, plan: Plan, project_id: uuid.UUID) -> dict[str, int]:
    """Rows that still name the project, per table (all zero after a purge)."""
    left = {}
    for name in plan.tenant_tables:
        left[name] = await conn.fetchval(f"SELECT count(*) FROM {ident(name)} WHERE project_id = $1", project_id)
    left["projects"] = await conn.fetchval("SELECT count(*) FROM projects WHERE id = $1", project_id)
    return left


async def delete_objects(store: ObjectStore, project_id: uuid.UUID) -> tuple[int, int]:
    """Remove every object under the project's prefix; (count, bytes)."""
    found = await store.keys(prefix(project_id))
    for key, _ in found:
        await store.delete(key)
    return len(found), sum(size for _, size in found)
