"""A small migration runner: numbered `.sql` files applied once each, in order.

Each file runs in its own transaction and is recorded with its SHA-256 in
`schema_migrations`; a Postgres advisory lock makes concurrent starters (API
and worker processes booting together) take turns. A file edited after it was
applied is refused rather than silently skipped: schema history is append-only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_LOCK_ID = 0x52454C4159  # "RELAY"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(Exception):
    """The migration history and the files on disk disagree."""


@dataclass(frozen=True)
class Migration:
    """One numbered file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(directory: Path) -> list[Migration]:
    """Every `NNNN_name.sql` in `directory`, ordered; duplicate numbers are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_case.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version}")
        found[version] = Migration(version, path.name, path.read_text())
    return [found[v] for v in sorted(found)]


async def migrate(dsn: str, directory: Path) -> list[str]:
    """Apply what is pending in `directory` to the database at `dsn`; return the names applied."""
    migrations = load(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version INTEGER PRIMARY KEY,
                       name TEXT NOT NULL,
                       checksum CHAR(64) NOT NULL,
                       applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
            )
            applied = {r["version"]: r for r in await conn.fetch("SELECT * FROM schema_migrations")}
            done: list[str] = []
            for m in migrations:
                row = applied.get(m.version)
                if row is not None:
                    if row["checksum"] != m.checksum:
                        raise MigrationError(
                            f"{m.name} was edited after it was applied (checksum differs); "
                            "add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        m.version, m.name, m.checksum,
                    )
                done.append(m.name)
            unknown = sorted(set(applied) - {m.version for m in migrations})
            if unknown:
                raise MigrationError(f"database has migrations this code does not know: {unknown}")
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()


async def status(dsn: str, directory: Path) -> list[tuple[str, bool]]:
    """Each migration file with whether it has been applied, for operators."""
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")} if exists else set()
    finally:
        await conn.close()
    return [(m.name, m.version in applied) for m in load(directory)]
