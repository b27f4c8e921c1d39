"""Wire types of the residency endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

MAX_GRACE = 86_400


class Usage(msgspec.Struct):
    """Objects and bytes under one prefix."""

    objects: int
    bytes: int


class Store(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where a project's data is kept, and how much of it: the cell's database or its object storage."""

    kind: Literal["database", "object_storage"]
    region: str
    name: str
    rows: int | None = None
    tables: dict[str, int] | None = None
    prefix: str | None = None
    objects: int | None = None
    bytes: int | None = None
    prefixes: dict[str, Usage] | None = None


class ObjectFinding(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An object no row of the project accounts for, or a row's reference that finds no object of its own."""

    key: str
    bytes: int | None = None
    referenced_by: str | None = None


class Findings(msgspec.Struct, kw_only=True):
    """What the audit could not account for (empty lists when the project is clean)."""

    orphan_objects: list[ObjectFinding]
    missing_objects: list[ObjectFinding]
    cross_references: list[ObjectFinding]
    recent_objects: int
    """Unreferenced objects younger than the grace period: uploads whose row is not committed yet."""


class LastAudit(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The newest signed report that covered the project.

    A project report carries its whole signed `body`, which anyone can check against `hash`, `signature`
    and `public_key`; a report of the whole cell names other projects, so only this project's `section`
    is shown (the full chain is for the operator's `relay residency verify`).
    """

    seq: int
    created_at: datetime
    scope: Literal["cell", "project"]
    clean: bool
    hash: str
    prev_hash: str
    signature: str
    public_key: str
    body: dict[str, Any] | None = None
    section: dict[str, Any] | None = None


class Residency(msgspec.Struct, kw_only=True):
    """`GET /v1/projects/{id}/residency`: where the project's data is, checked from the stores just now."""

    project_id: uuid.UUID
    region: str
    stores: list[Store]
    last_audit: LastAudit | None
    clean: bool
    findings: Findings
    public_key: str
    """The cell's Ed25519 key (raw, base64) that signs its residency reports."""
    head_hash: str | None
    """The hash of the cell's newest report: keep it to detect a chain cut short later."""
    checked_at: datetime


class AuditIn(msgspec.Struct, kw_only=True):
    """`POST …/residency/audits`: run and record a signed audit of the project."""

    grace_seconds: int = 60

    def __post_init__(self) -> None:
        if not 0 <= self.grace_seconds <= MAX_GRACE:
            raise ValueError(f"grace_seconds is between 0 and {MAX_GRACE} - at `$.grace_seconds`")


class Report(msgspec.Struct, kw_only=True):
    """A sealed report as stored: verify `hash` and `signature` over `{seq, prev_hash, body}` (see receipts)."""

    seq: int
    created_at: datetime
    scope: Literal["cell", "project"]
    body: dict[str, Any]
    prev_hash: str
    hash: str
    signature: str
    public_key: str
