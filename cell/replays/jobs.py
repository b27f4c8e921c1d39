"""Worker jobs of the replays area: processing a finished replay, and closing replays whose SDK went quiet."""

from __future__ import annotations

import uuid
from typing import Any

from cell.jobs import Cron, Job
from cell.replays import processing
from cell.settings import CellSettings


async def process_replay(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """`replay.finished`: check the replay's chunks and move it to `ready` or `failed` (idempotent)."""
    await processing.process(ctx["pool"], ctx["store"], uuid.UUID(payload["replay_id"]))


async def close_idle_replays(ctx: dict[str, Any]) -> int:
    """Every few seconds: replays recording with no chunk for the idle timeout are processed as if finished."""
    settings: CellSettings = ctx["settings"]
    return await processing.close_idle(ctx["pool"], settings.replay_idle_timeout_seconds)


JOBS = [Job(processing.FINISHED, process_replay, timeout=300, retries=5, name="replays.process")]
# A sweep is one query on a partial index, so it runs every 15 s: a replay closes at most that long
# after its timeout.
CRONS = [Cron("replays.close_idle", close_idle_replays, cron="* * * * * */15", timeout=120)]
