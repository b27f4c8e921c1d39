"""Which tables a move carries, in which order, and how each is keyed: read from the catalogue, not listed.

A tenant table is any base table with a `project_id` column. A move copies
them all, parents before children (the foreign-key graph), so a table added
by a later migration moves without anyone touching this code. Left out:

- `outbox`: its ids are this cell's serial numbers and most of its rows are
  finished work. Only the pending rows move, at activation, re-created in the
  target (`queries.pending_jobs`), so no follow-up of an acknowledged write is
  lost and none that already ran runs twice.
- `dead_letters`: the source's record of its own failed deliveries, keyed by
  source outbox ids that mean nothing in the target; purged with the project.
- `move_changes`, `moved_projects`: the move's own bookkeeping.

Every value leaves the database as `to_jsonb(row)` minus generated columns
(e.g. `interactions.search`), in UTC, and comes back in through
`jsonb_populate_recordset`, so types survive the trip without Python knowing them. Values sealed with the
cell's key are the exception: they travel opened and are sealed again by the target (cell/sealed.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import asyncpg

from common.problems import Problem

SKIP = frozenset({"outbox", "dead_letters", "move_changes", "moved_projects"})
"""Tables with a project_id that a move does not copy (see the module docstring)."""
CELL_COLUMNS = ("region", "state", "epoch")
"""Columns of `projects` that describe the project's place in this cell, not the project. (Values sealed with
this cell's key, such as `projects.sealed_secret`, do move: opened and sealed again, see cell/sealed.py.)"""
GUARD = "relay_move_guard"


def ident(name: str) -> str:
    """A quoted SQL identifier (names come from the catalogue)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Reference:
    """A foreign key of a copied table to another copied table (other than `projects`)."""

    parent: str
    columns: tuple[str, ...]
    parent_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """One table a move copies."""

    name: str
    columns: tuple[str, ...]
    """Columns copied (generated ones excluded)."""
    types: dict[str, str]
    """Column → SQL type (format_type), for casting cursor and key values."""
    key: tuple[str, ...]
    """Primary-key columns, the order rows are copied in."""
    excluded: tuple[str, ...]
    """Columns left out of every export and checksum."""
    references: tuple[Reference, ...] = ()
    """Its foreign keys to other copied tables: an imported row whose parent is not there yet is skipped."""

    @property
    def sql(self) -> str:
        return ident(self.name)

    @property
    def owner_column(self) -> str:
        """The column that names the project: `id` for `projects`, else `project_id`."""
        return "id" if self.name == "projects" else "project_id"

    def key_of(self, json_param: str) -> str:
        """SQL for the row's key values read from a JSON array parameter, cast to their types."""
        return ", ".join(f"({json_param} ->> {i})::{self.types[c]}" for i, c in enumerate(self.key))

    @property
    def key_tuple(self) -> str:
        return ", ".join(f"t.{ident(c)}" for c in self.key)

    @property
    def row_jsonb(self) -> str:
        """SQL: the row as exported, as jsonb: without generated or cell-only columns."""
        return f"(to_jsonb(t) - '{{{','.join(self.excluded)}}}'::text[])"

    @property
    def row_json(self) -> str:
        """The row as exported: JSON text without generated or cell-only columns."""
        return f"{self.row_jsonb}::text"

    @property
    def key_json(self) -> str:
        """The row's primary key as a JSON array text (the export cursor)."""
        return f"jsonb_build_array({self.key_tuple})::text"


@dataclass(frozen=True)
class Plan:
    """The tables of a move in copy order (`projects` first), and those that still lack the guard."""

    tables: tuple[Table, ...]
    unguarded: tuple[str, ...]
    tenant_tables: tuple[str, ...]
    """Every table with a project_id column (copied or not), children first: what a purge empties."""

    def table(self, name: str) -> Table:
        """A copied table by name; 404 for anything else (never a name from the request in SQL)."""
        for table in self.tables:
            if table.name == name:
                return table
        raise Problem(404, "no such table in a move")


async def read_plan(conn: asyncpg.Connection) -> Plan:
    """The plan of this cell's schema as it is now."""
    columns = await conn.fetch(
        """SELECT c.relname AS table_name, a.attname AS column_name,
                  format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated <> '' AS generated
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            ORDER BY c.relname, a.attnum""")
    keys = await conn.fetch(
        """SELECT c.relname AS table_name, array_agg(a.attname ORDER BY k.n) AS key
             FROM pg_constraint pk
             JOIN pg_class c ON c.oid = pk.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN LATERAL unnest(pk.conkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = pk.conrelid AND a.attnum = k.attnum
            WHERE pk.contype = 'p' AND n.nspname = current_schema()
            GROUP BY c.relname""")
    links = await conn.fetch(
        """SELECT c.relname AS child, p.relname AS parent,
                  ARRAY(SELECT a.attname FROM unnest(f.conkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.n ORDER BY k.i) AS columns,
                  ARRAY(SELECT a.attname FROM unnest(f.confkey) WITH ORDINALITY k(n, i)
                          JOIN pg_attribute a ON a.attrelid = f.confrelid AND a.attnum = k.n ORDER BY k.i)
                      AS parent_columns
             FROM pg_constraint f
             JOIN pg_class c ON c.oid = f.conrelid
             JOIN pg_class p ON p.oid = f.confrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE f.contype = 'f' AND n.nspname = current_schema()""")
    guarded = {r["table_name"] for r in await conn.fetch(
        """SELECT c.relname AS table_name FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
            WHERE g.tgname = $1 AND NOT g.tgisinternal""", GUARD)}
    cols: dict[str, list[asyncpg.Record]] = {}
    for r in columns:
        cols.setdefault(r["table_name"], []).append(r)
    pks = {r["table_name"]: tuple(r["key"]) for r in keys}
    tenant = {name for name, rs in cols.items() if any(r["column_name"] == "project_id" for r in rs)}
    copied = {name for name in tenant if name not in SKIP} | {"projects"}
    parents: dict[str, set[str]] = {name: set() for name in tenant | {"projects"}}
    for link in links:
        if link["child"] in parents and link["parent"] in parents and link["child"] != link["parent"]:
            parents[link["child"]].add(link["parent"])
    order = _topological(parents)
    tables = []
    for name in order:
        if name not in copied:
            continue
        if name not in pks:
            raise Problem(409, f"table {name} has no primary key, so a move cannot copy it")
        generated = tuple(r["column_name"] for r in cols[name] if r["generated"])
        excluded = generated + (CELL_COLUMNS if name == "projects" else ())
        references = tuple(
            Reference(link["parent"], tuple(link["columns"]), tuple(link["parent_columns"])) for link in links
            if link["child"] == name and link["parent"] in copied and link["parent"] not in ("projects", name))
        tables.append(Table(
            name=name,
            columns=tuple(r["column_name"] for r in cols[name] if r["column_name"] not in excluded),
            types={r["column_name"]: r["type"] for r in cols[name]},
            key=pks[name], excluded=excluded, references=references))
    unguarded = tuple(t.name for t in tables if t.name != "projects" and t.name not in guarded)
    purge_order = tuple(reversed([name for name in order if name in tenant and name != "moved_projects"]))
    return Plan(tuple(tables), unguarded, purge_order)


def _topological(parents: dict[str, set[str]]) -> list[str]:
    """Parents before children, ties by name (stable across cells with the same schema)."""
    order: list[str] = []
    placed: set[str] = set()
    pending = dict(parents)
    while pending:
        ready = sorted(name for name, ps in pending.items() if ps <= placed)
        if not ready:
            raise Problem(409, f"foreign keys form a cycle among {', '.join(sorted(pending))}")
        for name in ready:
            order.append(name)
            placed.add(name)
            del pending[name]
    return order


async def ensure_guards(conn: asyncpg.Connection, plan: Plan) -> Plan:
    """Attach the change-capture guard to every copied table that lacks it (tables added since the last move).

    CREATE TRIGGER waits for writes in flight on the table and holds new ones for a moment; it runs
    once per table in the life of a cell.
    """
    if not plan.unguarded:
        return plan
    for name in plan.unguarded:
        table = plan.table(name)
        args = ", ".join("'" + c.replace("'", "''") + "'" for c in table.key)
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '5s'")
            exists = await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
                                   WHERE g.tgname = $1 AND c.relname = $2 AND NOT g.tgisinternal)""", GUARD, name)
            if not exists:
                with contextlib.suppress(asyncpg.DuplicateObjectError):  # another process attached it just now
                    await conn.execute(
                        f"CREATE TRIGGER {GUARD} BEFORE INSERT OR UPDATE OR DELETE ON {table.sql}"
                        f" FOR EACH ROW EXECUTE FUNCTION {GUARD}({args})")
    return await read_plan(conn)
