"""Building a project export: every row and every object of the project in one zip, with a signed manifest.

The rows are read in one repeatable-read snapshot, table by table in the order
a move copies them (cell/moves/schema.py finds the tables in the catalogue, so a
table added later is exported without anyone touching this code), one JSON
object per line under `tables/{table}.jsonl`. The objects under the project's
prefix follow under `objects/…` (their key below `projects/{id}/`), bytes as
stored; earlier exports are left out. `manifest.json` lists each file with its
size and SHA-256 and is signed by the region's receipt key (manifest.py).

Credentials are withheld, not exported: key hashes, a project secret still plain,
and every value sealed with the cell's key (cell/sealed.py: the project's HMAC and
identity secrets, webhook signing secrets, integration tokens). The manifest says
which.

The archive is spooled in a temporary file (memory up to a bound, then local
disk) and then stored under `projects/{id}/exports/{export id}/` in the region's
own object store, with the manifest beside it: nothing leaves the region.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import asyncpg
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cell import sealed
from cell.exports import manifest
from cell.exports.queries import prefix
from cell.moves.schema import Table, ident, read_plan
from cell.storage import ObjectStore, project_key
from cell.users.export import copy_object

WITHHELD = {"projects": ("secret",), "api_keys": ("key_hash", "key_digest")}
"""Columns never exported besides the sealed ones (cell/sealed.py): secrets that would let the holder act as
the project."""
WITHHELD_VALUE = "[withheld]"
IN_MEMORY = 8 * 1024 * 1024
WRITE_SIZE = 256 * 1024
READ_SIZE = 1024 * 1024
MAX_ARCHIVE = 1 << 40


@dataclass(frozen=True)
class Built:
    """A stored export: what its row records."""

    storage_key: str
    manifest_storage_key: str
    size_bytes: int
    sha256: str
    manifest: manifest.SignedManifest
    counts: dict[str, Any]


def _without_sealed(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row with every sealed value inside a JSON column (integration tokens) replaced by `[withheld]`."""
    for field in sealed.fields_of(table):
        if field.field is not None and field.get(row) is not None:
            field.put(row, WITHHELD_VALUE)
    return row


async def _dump(conn: asyncpg.Connection, archive: zipfile.ZipFile, table: Table,
                project_id: uuid.UUID) -> dict[str, Any]:
    """One table's rows of the project as JSON lines into the archive; its manifest entry."""
    columns = [*WITHHELD.get(table.name, ()), *sealed.columns_of(table.name)]
    withheld = [*table.excluded, *columns]
    inside = any(f.field is not None for f in sealed.fields_of(table.name))
    name = f"tables/{table.name}.jsonl"
    info = zipfile.ZipInfo(name, date_time=datetime.now(UTC).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    digest, rows, size = hashlib.sha256(), 0, 0
    buffer = bytearray()
    with archive.open(info, "w", force_zip64=True) as dst:
        async for record in conn.cursor(
                f"""SELECT (to_jsonb(t) - $2::text[])::text FROM {table.sql} t
                     WHERE t.{ident(table.owner_column)} = $1 ORDER BY {table.key_tuple}""",
                project_id, withheld, prefetch=500):
            line: bytes = record[0].encode()
            if inside:
                line = msgspec.json.encode(_without_sealed(table.name, msgspec.json.decode(line)))
            buffer += line + b"\n"
            rows += 1
            if len(buffer) >= WRITE_SIZE:
                digest.update(buffer)
                size += len(buffer)
                await asyncio.to_thread(dst.write, bytes(buffer))
                buffer.clear()
        digest.update(buffer)
        size += len(buffer)
        await asyncio.to_thread(dst.write, bytes(buffer))
    entry = {"table": table.name, "file": name, "rows": rows, "bytes": size, "sha256": digest.hexdigest()}
    if columns or inside:
        entry["withheld"] = columns or ["sealed values"]
    return entry


async def _chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(file.read, READ_SIZE):
        yield chunk


async def build(pool: asyncpg.Pool, store: ObjectStore, key: Ed25519PrivateKey, region: str,
                project_id: uuid.UUID, export_id: uuid.UUID) -> Built:
    """Build the project's archive and store it with its signed manifest; a repeat overwrites the same keys."""
    own = project_key(project_id) + "/"
    exports = project_key(project_id, "exports") + "/"
    with tempfile.SpooledTemporaryFile(max_size=IN_MEMORY) as spool:
        with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            async with pool.acquire() as conn:
                plan = await read_plan(conn)
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    tables = [await _dump(conn, archive, table, project_id) for table in plan.tables]
            objects: list[dict[str, Any]] = []
            for object_key, _ in sorted(await store.keys(own)):
                if object_key.startswith(exports):
                    continue
                name = "objects/" + object_key.removeprefix(own)
                copied = await copy_object(store, object_key, archive, name)
                if copied is not None:  # gone since the listing (erased meanwhile): not part of the export
                    objects.append({"key": object_key, "file": name, "bytes": copied.size, "sha256": copied.sha256})
            body = {"export_id": str(export_id), "project_id": str(project_id), "region": region,
                    "created_at": datetime.now(UTC).isoformat(), "tables": tables, "objects": objects}
            signed = manifest.seal(key, body)
            encoded = msgspec.json.format(msgspec.json.encode(signed), indent=2)
            archive.writestr("manifest.json", encoded, compress_type=zipfile.ZIP_DEFLATED)
        spool.seek(0)
        base = prefix(project_id, export_id)
        stored = await store.put_stream(f"{base}/project-{project_id}.zip", _chunks(spool), MAX_ARCHIVE)
    kept = await store.put(f"{base}/manifest.json", encoded)
    counts = {"rows": {t["table"]: t["rows"] for t in tables}, "objects": len(objects),
              "object_bytes": sum(o["bytes"] for o in objects)}
    return Built(stored.key, kept.key, stored.size, stored.sha256, signed, counts)
