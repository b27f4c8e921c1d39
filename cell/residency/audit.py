"""Residency audit: prove from a cell's own stores that everything in them belongs to a project homed there.

The audit trusts no application bookkeeping. It reads the database catalogue to
find every table, and the object store's listing to find every object:

- A table with a `project_id` column is a tenant table: each of its rows must
  name a project in `projects` whose region is this cell's. Rows naming any
  other project are *foreign* (the project is unknown here, or homed in another
  region). Rows with a NULL project_id are the cell's own (outbox jobs) and are
  counted apart. A table without `project_id` that holds rows and is not one of
  the cell's own (`CELL_TABLES`) is *unattributed*: nothing proves whose it is.
- Every object key must be `projects/{homed project}/…`; any other key is
  foreign. Under a homed project's prefix an object must be referenced by a
  row of that project — a text column named `storage_key` (or `…_storage_key`),
  or a string inside a JSON column named `chunks` or `storage_keys` (the replay
  chunk index) — or it is an *orphan*. Objects younger than `grace` seconds are
  reported as recent instead (an upload stores its bytes just before its row
  commits). A reference whose object is absent is *missing*; one that points
  into another project's prefix is a *cross reference*.
- Rows are counted per project and table, bytes per project and first prefix
  segment (`media`, `replays`, …).

The result is a JSON-able report body (ints and strings only, so it survives a
round trip through jsonb byte for byte when canonicalised); `receipts` seals it.
Listings are capped at `LIST_LIMIT` entries, with totals in `summary`.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import obstore

from cell.storage import ObjectStore, project_key

VERSION = 1
# The cell's own tables. `moved_projects` holds tombstones of projects that left (id and new region),
# kept so the old cell can answer 421 with the new region: its rows are deliberately not homed here.
CELL_TABLES = frozenset({"schema_migrations", "residency_reports", "moved_projects"})
"""Tables about the cell itself, holding no project's data."""
LIST_LIMIT = 1000
DEFAULT_GRACE = 60
"""Seconds an unreferenced object may be in flight (bytes stored, row not yet committed)."""
_KEY = re.compile(r"^projects/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/([^/]+)(/.*)?$")
_TEXT_TYPES = frozenset({"text", "character varying", "character"})
_JSON_TYPES = frozenset({"json", "jsonb"})
_JSON_REFERENCE_COLUMNS = frozenset({"chunks", "storage_keys"})


def ident(name: str) -> str:
    """A quoted SQL identifier (names come from the catalogue, and may need quoting)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Table:
    """One base table and its columns (name → information_schema data_type)."""

    schema: str
    name: str
    columns: dict[str, str]

    @property
    def sql(self) -> str:
        """The table as it is written in a query."""
        return f"{ident(self.schema)}.{ident(self.name)}"

    @property
    def label(self) -> str:
        """The table as a report names it."""
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Reference:
    """A column that names objects: a key per row (text) or keys inside a JSON value."""

    table: Table
    column: str
    json: bool

    @property
    def label(self) -> str:
        return f"{self.table.label}.{self.column}"


@dataclass(frozen=True)
class Schema:
    """What the audit reads, found in the catalogue rather than listed by hand."""

    tables: tuple[Table, ...]

    @property
    def tenant(self) -> list[Table]:
        """Tables whose rows belong to a project."""
        return [t for t in self.tables
                if "project_id" in t.columns and t.label != "projects" and t.name not in CELL_TABLES]

    @property
    def unowned(self) -> list[Table]:
        """Tables with no project_id that are neither `projects` nor the cell's own."""
        return [t for t in self.tables
                if "project_id" not in t.columns and t.label != "projects" and t.name not in CELL_TABLES]

    @property
    def references(self) -> list[Reference]:
        """Columns that name objects in the store."""
        found = []
        for table in self.tenant:
            for column, kind in table.columns.items():
                if kind in _TEXT_TYPES and (column == "storage_key" or column.endswith("_storage_key")):
                    found.append(Reference(table, column, json=False))
                elif kind in _JSON_TYPES and column in _JSON_REFERENCE_COLUMNS:
                    found.append(Reference(table, column, json=True))
        return found


async def read_schema(conn: asyncpg.Connection) -> Schema:
    """Every base table outside the system schemas, with its columns."""
    rows = await conn.fetch(
        """SELECT c.table_schema, c.table_name, c.column_name, c.data_type
             FROM information_schema.columns c
             JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE t.table_type = 'BASE TABLE' AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
            ORDER BY c.table_schema, c.table_name, c.ordinal_position""")
    tables: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        tables.setdefault((r["table_schema"], r["table_name"]), {})[r["column_name"]] = r["data_type"]
    return Schema(tuple(Table(s, n, cols) for (s, n), cols in tables.items()))


@dataclass(frozen=True)
class StoredObject:
    """One object of the store."""

    key: str
    size: int
    modified: datetime


async def list_objects(store: ObjectStore, prefix: str = "") -> list[StoredObject]:
    """Every object under `prefix` with its size and modification time.

    `ObjectStore.keys` gives no times, and the grace period needs them; this reads the same obstore
    listing (the store's handle is private to cell.storage, hence the one reach inside it).
    """
    found: list[StoredObject] = []
    async for batch in obstore.list(store._store, prefix=prefix or None):
        found.extend(StoredObject(m["path"], int(m["size"]), m["last_modified"]) for m in batch)
    return found


async def _references(conn: asyncpg.Connection, schema: Schema,
                      project_id: uuid.UUID | None) -> dict[str, tuple[str, str | None]]:
    """Every object key a row names → (where, the row's project id)."""
    refs: dict[str, tuple[str, str | None]] = {}
    for ref in schema.references:
        column = f"t.{ident(ref.column)}"
        if ref.json:
            source = (f"{ref.table.sql} t, jsonb_path_query({column}::jsonb,"
                      """ 'strict $.** ? (@.type() == "string" && @ starts with "projects/")') k""")
            key, condition = "k #>> '{}'", "true"
        else:
            source, key, condition = f"{ref.table.sql} t", column, f"{column} IS NOT NULL"
        query = f"SELECT t.project_id::text AS pid, {key} AS key FROM {source} WHERE {condition}"
        if project_id is None:
            rows = await conn.fetch(query)
        else:
            rows = await conn.fetch(query + " AND t.project_id = $1", project_id)
        for row in rows:
            refs.setdefault(row["key"], (ref.label, row["pid"]))
    return refs


@dataclass
class _Usage:
    """Objects and bytes of one project."""

    objects: int = 0
    bytes: int = 0
    prefixes: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, prefix: str, size: int) -> None:
        self.objects += 1
        self.bytes += size
        entry = self.prefixes.setdefault(prefix, {"objects": 0, "bytes": 0})
        entry["objects"] += 1
        entry["bytes"] += size


@dataclass
class _Findings:
    """What the audit could not account for, capped per list with exact totals."""

    lists: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, kind: str, entry: dict[str, Any]) -> None:
        self.totals[kind] += 1
        if len(self.lists[kind]) < LIST_LIMIT:
            self.lists[kind].append(entry)


def _now() -> datetime:
    return datetime.now(UTC)


def _classify_objects(objects: list[StoredObject], homed: set[str], regions: dict[str, str],
                      refs_before: dict[str, tuple[str, str | None]], refs_after: dict[str, tuple[str, str | None]],
                      grace: float, findings: _Findings, per_project: dict[str, _Findings]) -> dict[str, _Usage]:
    """Sort every object into a homed project's usage, or a finding; and find references with no object."""
    usage: dict[str, _Usage] = defaultdict(_Usage)
    now = _now()
    listed = set()
    for obj in objects:
        listed.add(obj.key)
        m = _KEY.match(obj.key)
        if m is None:
            findings.add("foreign_objects", {"key": obj.key, "bytes": obj.size, "reason": "outside projects/"})
            continue
        pid, prefix = m.group(1), m.group(2)
        if pid not in homed:
            reason = f"project homed in {regions[pid]}" if pid in regions else "no such project in this cell"
            findings.add("foreign_objects", {"key": obj.key, "bytes": obj.size, "project_id": pid, "reason": reason})
            continue
        usage[pid].add(prefix, obj.size)
        if obj.key in refs_before or obj.key in refs_after:
            continue
        mine = per_project.setdefault(pid, _Findings())
        if (now - obj.modified).total_seconds() < grace:
            mine.totals["recent_objects"] += 1
            findings.totals["recent_objects"] += 1
            continue
        entry = {"key": obj.key, "bytes": obj.size, "project_id": pid}
        findings.add("orphan_objects", entry)
        mine.add("orphan_objects", entry)
    for key, (where, row_pid) in refs_before.items():
        own = row_pid is not None and key.startswith(f"projects/{row_pid}/")
        if not own:
            entry = {"key": key, "referenced_by": where, "project_id": row_pid}
            findings.add("cross_references", entry)
            if row_pid in homed:
                per_project.setdefault(row_pid, _Findings()).add("cross_references", entry)
        # A row deleted after the first read (and its object with it) is not missing: it must be named twice.
        if key not in listed and key in refs_after:
            entry = {"key": key, "referenced_by": where, "project_id": row_pid}
            findings.add("missing_objects", entry)
            if row_pid in homed:
                per_project.setdefault(row_pid, _Findings()).add("missing_objects", entry)
    return usage


_PROJECT_FINDINGS = ("orphan_objects", "missing_objects", "cross_references")
_CELL_FINDINGS = ("foreign_rows", "foreign_objects", "unowned_tables", *_PROJECT_FINDINGS)


def _section(tables: dict[str, int], usage: _Usage, found: _Findings) -> dict[str, Any]:
    """One project's part of a report."""
    return {
        "tables": dict(sorted(tables.items())),
        "rows": sum(tables.values()),
        "objects": usage.objects,
        "bytes": usage.bytes,
        "prefixes": dict(sorted(usage.prefixes.items())),
        **{kind: found.lists.get(kind, []) for kind in _PROJECT_FINDINGS},
        "recent_objects": found.totals.get("recent_objects", 0),
        "clean": not any(found.totals.get(kind) for kind in _PROJECT_FINDINGS),
    }


async def audit_cell(conn: asyncpg.Connection, store: ObjectStore, region: str, *,
                     grace: float = DEFAULT_GRACE) -> dict[str, Any]:
    """Audit every row and object of the cell; the body of a `cell` report."""
    started = _now()
    schema = await read_schema(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        projects = {str(r["id"]): r["region"] for r in await conn.fetch("SELECT id, region::text FROM projects")}
        homed = {pid for pid, r in projects.items() if r == region}
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        totals: dict[str, dict[str, int]] = {}
        findings = _Findings()
        for table in schema.tenant:
            entry = {"rows": 0, "homed": 0, "foreign": 0, "system": 0}
            for row in await conn.fetch(f"SELECT project_id::text AS pid, count(*) AS n FROM {table.sql} GROUP BY 1"):
                pid, n = row["pid"], row["n"]
                entry["rows"] += n
                if pid is None:
                    entry["system"] += n
                elif pid in homed:
                    entry["homed"] += n
                    counts[pid][table.label] = n
                else:
                    entry["foreign"] += n
                    findings.add("foreign_rows", {
                        "table": table.label, "project_id": pid, "rows": n,
                        "reason": f"project homed in {projects[pid]}" if pid in projects
                        else "no such project in this cell",
                        "sample_ids": await _sample(conn, table, pid)})
            totals[table.label] = entry
        for pid in homed:
            counts[pid]["projects"] = 1
        totals["projects"] = {"rows": len(projects), "homed": len(homed), "foreign": len(projects) - len(homed),
                              "system": 0}
        for table in schema.unowned:
            n = await conn.fetchval(f"SELECT count(*) FROM {table.sql}")
            totals[table.label] = {"rows": n, "homed": 0, "foreign": 0, "system": 0}
            if n:
                findings.add("unowned_tables", {"table": table.label, "rows": n,
                                                "reason": "no project_id column: its rows cannot be attributed"})
        refs_before = await _references(conn, schema, None)
    for pid, r in projects.items():
        if pid not in homed:
            findings.add("foreign_projects", {"project_id": pid, "region": r})
    objects = await list_objects(store)
    refs_after = await _references(conn, schema, None)
    per_project: dict[str, _Findings] = {}
    usage = _classify_objects(objects, homed, projects, refs_before, refs_after, grace, findings, per_project)
    body: dict[str, Any] = {
        "version": VERSION, "scope": "cell", "region": region, "created_at": started.isoformat(),
        "grace_seconds": int(grace),
        "projects": {pid: _section(counts[pid], usage[pid], per_project.get(pid, _Findings()))
                     for pid in sorted(homed)},
        "tables": dict(sorted(totals.items())),
        "objects": {"objects": len(objects), "bytes": sum(o.size for o in objects)},
        "foreign_projects": findings.lists.get("foreign_projects", []),
        **{kind: findings.lists.get(kind, []) for kind in _CELL_FINDINGS},
        "recent_objects": findings.totals.get("recent_objects", 0),
        "summary": {kind: findings.totals.get(kind, 0) for kind in ("foreign_projects", *_CELL_FINDINGS)},
    }
    body["clean"] = not any(body["summary"].values())
    return body


async def _sample(conn: asyncpg.Connection, table: Table, project_id: str) -> list[str]:
    """A few ids of a project's rows in a table, so an operator can look at them."""
    if "id" not in table.columns:
        return []
    rows = await conn.fetch(
        f"SELECT id::text AS id FROM {table.sql} WHERE project_id = $1::uuid ORDER BY id LIMIT 5", project_id)
    return [r["id"] for r in rows]


async def audit_project(conn: asyncpg.Connection, store: ObjectStore, region: str, project_id: uuid.UUID, *,
                        grace: float = DEFAULT_GRACE) -> dict[str, Any]:
    """Audit one homed project: its rows per table, its objects, and what of its prefix no row accounts for.

    Rows of a project can only be its own, so what a project audit can find is orphaned, missing or
    cross-referenced objects; foreign rows need the whole cell (`audit_cell`).
    """
    started = _now()
    pid = str(project_id)
    schema = await read_schema(conn)
    tables: dict[str, int] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        home = await conn.fetchval("SELECT region::text FROM projects WHERE id = $1", project_id)
        for table in schema.tenant:
            n = await conn.fetchval(f"SELECT count(*) FROM {table.sql} WHERE project_id = $1", project_id)
            if n:
                tables[table.label] = n
        refs_before = await _references(conn, schema, project_id)
    if home is not None:
        tables["projects"] = 1
    objects = await list_objects(store, project_key(project_id))
    refs_after = await _references(conn, schema, project_id)
    homed = {pid} if home == region else set()
    regions = {pid: home} if home is not None else {}
    findings, per_project = _Findings(), dict[str, _Findings]()
    usage = _classify_objects(objects, homed, regions, refs_before, refs_after, grace, findings, per_project)
    section = _section(tables, usage[pid], per_project.get(pid, _Findings()))
    body: dict[str, Any] = {
        "version": VERSION, "scope": "project", "region": region, "created_at": started.isoformat(),
        "grace_seconds": int(grace), "project_id": pid, "homed": home == region, **section,
    }
    body["foreign_objects"] = findings.lists.get("foreign_objects", [])
    body["clean"] = section["clean"] and home == region and not body["foreign_objects"]
    return body
