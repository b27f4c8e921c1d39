"""Wire types of the internal move endpoints, shared by nothing but the router's move driver and this cell."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


class Placement(msgspec.Struct, kw_only=True):
    """A project's place in this cell: its move state and routing epoch, or where it went."""

    project_id: uuid.UUID
    state: str
    """`active`, `importing`, `copying`, `fencing`, `fenced`, `moved`, or `absent`."""
    epoch: int | None = None
    region: str | None = None
    """Where the project moved to (state `moved`)."""


class TableInfo(msgspec.Struct, kw_only=True):
    """One table of a move, in copy order."""

    name: str
    key: list[str]


class PlanOut(msgspec.Struct, kw_only=True):
    """The tables a move copies, parents first."""

    tables: list[TableInfo]


class Written(msgspec.Struct, kw_only=True):
    """How many rows an import or a change batch wrote (and deleted)."""

    written: int
    deleted: int = 0


class TableChanges(msgspec.Struct, kw_only=True):
    """The current state of changed rows of one table: rows still there, keys of rows gone."""

    table: str
    rows: list[msgspec.Raw]
    deleted: list[msgspec.Raw]


class Changes(msgspec.Struct, kw_only=True):
    """A batch of logged changes, resolved against the source's tables; `seqs` are acknowledged afterwards."""

    seqs: list[int]
    more: bool
    tables: list[TableChanges] = msgspec.field(default_factory=list)


class ChangesIn(msgspec.Struct, kw_only=True):
    """Which changes to read: only those of `tables` (None: all), at most `limit`, in about `max_bytes`."""

    tables: list[str] | None = None
    limit: int = 1000
    max_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= 10_000:
            raise ValueError("limit must be 1 to 10000 - at `$.limit`")
        if not 1024 <= self.max_bytes <= 32 * 1024 * 1024:
            raise ValueError("max_bytes must be 1 KiB to 32 MiB - at `$.max_bytes`")


class Ack(msgspec.Struct, kw_only=True):
    """Changes the target has applied."""

    seqs: list[int]


class TableSum(msgspec.Struct, kw_only=True):
    """Rows of a project in one table, and an order-independent hash of their canonical text (for a table holding
    sealed values: of the text without them, `+` a keyed digest of the values opened, cell/sealed.py)."""

    rows: int
    hash: str


class ObjectInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One object under the project's prefix."""

    key: str
    size: int
    sha256: str | None = None


class ObjectList(msgspec.Struct, kw_only=True):
    data: list[ObjectInfo]


class ObjectSum(msgspec.Struct, kw_only=True):
    """All objects of a project: count, bytes, and a hash over (key, size, sha256) in key order."""

    count: int
    bytes: int
    hash: str


class Checksums(msgspec.Struct, kw_only=True):
    """What both sides of a move compare before the flip."""

    state: str
    tables: dict[str, TableSum]
    objects: ObjectSum


class EpochIn(msgspec.Struct, kw_only=True):
    """The directory epoch a state change goes with."""

    epoch: int

    def __post_init__(self) -> None:
        if self.epoch < 1:
            raise ValueError("epoch must be positive - at `$.epoch`")


class ReleaseIn(msgspec.Struct, kw_only=True):
    """The source lets go: the project now lives in `region` at `epoch`."""

    region: str
    epoch: int


class PurgeIn(msgspec.Struct, kw_only=True):
    """Purge the source after a flip; the receipt names the move."""

    move_id: uuid.UUID
    region: str
    epoch: int


class Job(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A pending follow-up job of the project (an outbox row, or one unfinished consumer of one)."""

    kind: str
    payload: dict[str, Any]
    only_job: str | None = None


class PendingJobs(msgspec.Struct, kw_only=True):
    """The source's unfinished follow-up work, and the last outbox id it issued."""

    last_outbox_id: int
    jobs: list[Job]


class ActivateIn(msgspec.Struct, kw_only=True):
    """Serve the project here from now on, with the source's unfinished jobs; audited as `project.moved`."""

    epoch: int
    last_outbox_id: int = 0
    jobs: list[Job] = msgspec.field(default_factory=list)
    move_id: uuid.UUID | None = None
    from_region: str | None = None
    requested_by: uuid.UUID | None = None
    """The dashboard user who asked for the move (None: an operator)."""


class Receipt(msgspec.Struct, kw_only=True):
    """A deletion receipt: the sealed residency report the purge appended to this cell's chain."""

    seq: int
    created_at: datetime
    body: dict[str, Any]
    prev_hash: str
    hash: str
    signature: str
    public_key: str
