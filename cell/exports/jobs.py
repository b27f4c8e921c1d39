"""Worker jobs of project exports: building the archive a `POST …/export` asked for."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

import asyncpg
from obstore.exceptions import BaseError as ObjectStoreError

from cell.exports import archive, queries
from cell.jobs import Job
from cell.residency.receipts import signing_key
from cell.settings import CellSettings
from cell.storage import ObjectStore

log = logging.getLogger("relay.exports")

REQUESTED = "project.export_requested"


async def build_export(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Build and store the export (idempotent: a finished one is left alone, a half-built one is rebuilt).

    A store or database failure marks the export `failed` with its kind (the owner asks for a new one);
    anything else is a bug, retried and then dead-lettered like any job.
    """
    settings: CellSettings = ctx["settings"]
    pool: asyncpg.Pool = ctx["pool"]
    store: ObjectStore = ctx["store"]
    export_id = uuid.UUID(payload["export_id"])
    row = await queries.claim(pool, export_id)
    if row is None:
        return
    try:
        built = await archive.build(pool, store, signing_key(settings.secret_key, settings.region),
                                    settings.region, row["project_id"], export_id)
    except (OSError, ObjectStoreError, asyncpg.PostgresError) as exc:
        log.warning("project export %s failed: %s", export_id, type(exc).__name__)
        with contextlib.suppress(OSError, ObjectStoreError):  # no half-written archive is left behind
            await store.delete_prefix(queries.prefix(row["project_id"], export_id))
        await queries.fail(pool, export_id, f"the export could not be built ({type(exc).__name__}); request another")
        return
    kept = await queries.finish(pool, export_id, {
        "storage_key": built.storage_key, "manifest_storage_key": built.manifest_storage_key,
        "size_bytes": built.size_bytes, "sha256": built.sha256, "manifest_hash": built.manifest.hash,
        "signature": built.manifest.signature, "public_key": built.manifest.public_key, "counts": built.counts})
    if not kept:  # withdrawn while it was built (an end user erased): its archive may hold them, so it goes
        log.info("project export %s was withdrawn while it was built; its archive is deleted", export_id)
        await store.delete_prefix(queries.prefix(row["project_id"], export_id))


JOBS = [Job(REQUESTED, build_export, timeout=3600, retries=3, name="exports.build")]
