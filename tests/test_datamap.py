"""docs/data-map.md is generated from the migrations and must match them; the migration reader must agree with
the schema a real Postgres builds from the same files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from common.migrate import migrate
from relay import datamap
from tests.conftest import sql
from tests.services import StorePostgres


def test_the_data_map_is_up_to_date() -> None:
    current = datamap.OUTPUT.read_text() if datamap.OUTPUT.exists() else ""
    assert current == datamap.render(), "docs/data-map.md is out of date: run `python -m relay.datamap`"
    assert datamap.main(["--check"]) == 0


def test_check_fails_on_a_stale_map(tmp_path: Path) -> None:
    stale = tmp_path / "map.md"
    stale.write_text(datamap.render().replace("| `email` |", "| `e_mail` |"))
    assert datamap.main(["--check", "--output", str(stale)]) == 1
    assert datamap.main(["--output", str(stale)]) == 0 and stale.read_text() == datamap.render()


def _live(pg: StorePostgres, name: str, directory: Path) -> dict[str, list[str]]:
    dsn = pg.database(name)
    asyncio.run(migrate(dsn, directory))
    rows = sql(dsn, """SELECT c.table_name, c.column_name FROM information_schema.columns c
                         JOIN information_schema.tables t USING (table_schema, table_name)
                        WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                          AND c.table_name <> 'schema_migrations'
                        ORDER BY c.table_name, c.ordinal_position""")
    live: dict[str, list[str]] = {}
    for r in rows:
        live.setdefault(r["table_name"], []).append(r["column_name"])
    return live


def test_the_reader_sees_what_postgres_builds(pg: StorePostgres) -> None:
    """Conditional columns (pgvector's `embedding`) are in the map, and in the live table where the server
    offers the extension (the embedded Postgres of `relay dev`) — not where it does not (a bare Postgres 15)."""
    for name, directory in (("datamap_cell", datamap.CELL_MIGRATIONS), ("datamap_router", datamap.ROUTER_MIGRATIONS)):
        live = _live(pg, name, directory)
        parsed = {t.name: [c.name for c in t.columns if not c.conditional or c.name in live.get(t.name, [])]
                  for t in datamap.read_schema(directory).values()}
        assert parsed == live, name
    conditional = [(t.name, c.name) for t in datamap.read_schema(datamap.CELL_MIGRATIONS).values()
                   for c in t.columns if c.conditional]
    assert conditional == [("interaction_vectors", "embedding")]
    assert "| `embedding` | vector(384) | end-user content |" in datamap.render()


def test_the_seed_tables_are_classified_column_by_column() -> None:
    """Every column of the data model's tables, the router's and the receipts' has a reviewed class."""
    for store, directory, files in (("cell", datamap.CELL_MIGRATIONS, {"0001_schema.sql", "0013_residency.sql"}),
                                    ("router", datamap.ROUTER_MIGRATIONS, {"0001_control.sql"})):
        enums = frozenset(datamap.enum_types(directory))
        for table in datamap.read_schema(directory).values():
            for column in table.columns:
                if column.added_in in files:
                    assert datamap.classify(store, table.name, column, enums)[0] != datamap.UNREVIEWED, (
                        f"{table.name}.{column.name}")
    text = datamap.render()
    assert "| `email` | varchar(255) | personal |" in text and "| `key_hash` | varchar(255) | secret |" in text
    assert "| `content_text` | text | end-user content |" in text
    assert "| `user_id` | uuid | pseudonymous |" in text


def test_the_reader_follows_alter_drop_rename_and_skips_function_bodies(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("""
        -- a comment; with a semicolon
        CREATE TYPE mood AS ENUM ('ok', 'meh');
        CREATE TABLE things (
            id UUID PRIMARY KEY,
            "Label" VARCHAR(20) NOT NULL DEFAULT 'a;b',   -- quoted name, semicolon in a default
            total NUMERIC(10, 2) CHECK (total > 0),
            words tsvector GENERATED ALWAYS AS (to_tsvector('simple', "Label")) STORED,
            UNIQUE (id, total),
            CONSTRAINT positive CHECK (total >= 0)
        );
        CREATE TABLE gone (id INT);
        /* block; comment */
        CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN CREATE TABLE nope (x int); RETURN NULL; END; $$;
    """)
    (tmp_path / "0002_b.sql").write_text("""
        ALTER TABLE things ADD COLUMN IF NOT EXISTS feeling mood, ADD COLUMN note TEXT;
        ALTER TABLE things DROP COLUMN total;
        ALTER TABLE things RENAME COLUMN note TO remark;
        ALTER TABLE things ALTER COLUMN remark TYPE VARCHAR(50) USING remark::varchar;
        ALTER TABLE things ADD CONSTRAINT c UNIQUE (id);
        ALTER TABLE public.things RENAME TO items;
        DROP TABLE IF EXISTS gone CASCADE;
    """)
    tables = datamap.read_schema(tmp_path)
    assert list(tables) == ["items"]
    items = tables["items"]
    assert [(c.name, c.type) for c in items.columns] == [
        ("id", "uuid"), ("Label", "varchar(20)"), ("words", "tsvector (generated)"), ("feeling", "mood"),
        ("remark", "varchar(50)")]
    assert items.created_in == "0001_a.sql"
    assert [c.added_in for c in items.columns] == ["0001_a.sql"] * 3 + ["0002_b.sql"] * 2
    assert datamap.enum_types(tmp_path) == {"mood"}
    assert datamap.classify("cell", "items", items.columns[3], frozenset({"mood"}))[0] == datamap.NONE
    assert datamap.classify("cell", "items", items.columns[4])[0] == datamap.UNREVIEWED
