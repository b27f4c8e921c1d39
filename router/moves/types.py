"""Wire types of moves: the public `/v1/projects/{id}/move` bodies, and the driver's resumable progress."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

MoveState = Literal["copying", "fenced", "flipped", "purged", "aborting", "failed"]
UNFINISHED = ("copying", "fenced", "flipped", "aborting")


class MoveIn(msgspec.Struct, kw_only=True):
    """`POST /v1/projects/{id}/move`."""

    to_region: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.to_region) <= 64:
            raise ValueError("a region name - at `$.to_region`")


class TableProgress(msgspec.Struct, kw_only=True):
    """One table of the bulk copy: rows at the start, rows copied, where to go on from."""

    name: str
    rows: int = 0
    copied: int = 0
    done: bool = False
    cursor: str | None = None
    """Opaque (the source cell's cursor after the last imported batch); not shown to callers."""


class ObjectProgress(msgspec.Struct, kw_only=True):
    """Objects under the project's prefix: at the start, and copied so far."""

    total: int = 0
    bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    done: bool = False


class Verification(msgspec.Struct, kw_only=True):
    """The last comparison of both sides' counts and checksums."""

    ok: bool
    tables: int
    rows: int
    objects: int
    bytes: int
    mismatched: list[str] = msgspec.field(default_factory=list)


class Progress(msgspec.Struct, kw_only=True):
    """What makes each phase of a move resumable, saved after every batch."""

    prepared: bool = False
    tables: list[TableProgress] = msgspec.field(default_factory=list)
    objects: ObjectProgress = msgspec.field(default_factory=ObjectProgress)
    changes_applied: int = 0
    verify: Verification | None = None
    verify_failures: int = 0
    activating: bool = False
    """Set just before the target is asked to serve: from then on the move is never abandoned."""


class TableOut(msgspec.Struct, kw_only=True):
    """One table's copy, as shown."""

    name: str
    rows: int
    copied: int
    done: bool


class ProgressOut(msgspec.Struct, kw_only=True):
    """A move's progress, as shown."""

    tables: list[TableOut]
    objects: ObjectProgress
    changes_applied: int
    verify: Verification | None = None


class Move(msgspec.Struct, kw_only=True):
    """A move of a project between regions, and how far it got."""

    move_id: uuid.UUID
    project_id: uuid.UUID
    from_region: str
    to_region: str
    state: MoveState
    step: str
    percent: int
    progress: ProgressOut
    error: str | None
    created_at: datetime
    updated_at: datetime
    fenced_at: datetime | None = None
    flipped_at: datetime | None = None
    finished_at: datetime | None = None
    receipt: dict[str, Any] | None = None
    """The source cell's signed deletion receipt, once purged."""


def percent(state: str, progress: Progress) -> int:
    """A rough share done: the bulk copy is 90 %, the fence and flip the rest."""
    if state == "purged":
        return 100
    if state == "flipped":
        return 96
    if state == "fenced":
        return 92
    weight = done = 0
    for t in progress.tables:
        w = max(t.rows, t.copied, 1)
        weight += w
        done += w if t.done else min(t.copied, w)
    weight += progress.objects.total
    done += progress.objects.total if progress.objects.done else min(progress.objects.copied,
                                                                     progress.objects.total)
    return int(90 * done / weight) if weight else 0


def shown(row: dict[str, Any]) -> Move:
    """A `moves` row as the API shows it."""
    progress = msgspec.convert(row["progress"] or {}, Progress)
    return Move(
        move_id=row["id"], project_id=row["project_id"], from_region=row["from_region"], to_region=row["to_region"],
        state=row["state"], step=row["step"], percent=percent(row["state"], progress),
        progress=ProgressOut(tables=[TableOut(name=t.name, rows=t.rows, copied=t.copied, done=t.done)
                                     for t in progress.tables],
                             objects=progress.objects, changes_applied=progress.changes_applied,
                             verify=progress.verify),
        error=row["last_error"], created_at=row["created_at"], updated_at=row["updated_at"],
        fenced_at=row["fenced_at"], flipped_at=row["flipped_at"], finished_at=row["finished_at"],
        receipt=row["receipt"])
