"""How the router drives moves, from `RELAY_MOVE_*` environment variables, validated at start.

Kept beside the move driver rather than in `RouterSettings` so the knobs of one
background task read as one block; `router.app` loads them with the router's
own settings, so a bad value stops the process before it serves.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from common.settings import load

MiB = 1024 * 1024


class MoveSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The move driver's pace and patience."""

    batch_rows: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    """Rows per copied batch (RELAY_MOVE_BATCH_ROWS)."""
    batch_bytes: Annotated[int, msgspec.Meta(ge=1024, le=32 * MiB)] = 4 * MiB
    """Bytes of row text per copied batch, whatever the row count (RELAY_MOVE_BATCH_BYTES)."""
    change_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    """Logged changes applied per batch (RELAY_MOVE_CHANGE_BATCH)."""
    pause_seconds: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.0
    """Pause after each copied batch, to spare a busy source cell (RELAY_MOVE_PAUSE_SECONDS)."""
    poll_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    """How often each router looks for moves to drive (RELAY_MOVE_POLL_SECONDS)."""
    propagation_seconds: Annotated[float, msgspec.Meta(ge=0, le=30)] = 0.5
    """Wait after a directory change is published before a cell acts on it, so every router has it: the source
    refuses an old epoch only once routers send the new one (RELAY_MOVE_PROPAGATION_SECONDS)."""
    fence_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    """A move still fenced after this long, not yet activated in the target, and failing, is abandoned: the
    source serves writes again and the target's copy is removed (RELAY_MOVE_FENCE_TIMEOUT_SECONDS)."""
    max_backoff_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Longest wait between retries of a failing step (RELAY_MOVE_MAX_BACKOFF_SECONDS)."""


def from_env() -> MoveSettings:
    """Read and validate the move settings from the environment."""
    return load(MoveSettings, prefix="RELAY_MOVE_")
