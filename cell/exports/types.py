"""Wire types of project exports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

ExportStatus = Literal["pending", "running", "ready", "failed"]


class ExportLinks(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where to go next: the export itself, and once `ready` its archive and signed manifest."""

    self: str
    content: str | None = None
    manifest: str | None = None


class ProjectExport(msgspec.Struct, kw_only=True):
    """A project export as the API returns it; `counts` has rows per table, objects and bytes once ready."""

    id: uuid.UUID
    project_id: uuid.UUID
    status: ExportStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    size_bytes: int | None
    sha256: str | None
    """SHA-256 of the zip archive."""
    manifest_hash: str | None
    """SHA-256 of the manifest's canonical body: what `signature` signs."""
    signature: str | None
    public_key: str | None
    counts: dict[str, Any] | None
    failure_reason: str | None
    links: ExportLinks
