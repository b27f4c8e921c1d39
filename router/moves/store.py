"""The `moves` table: starting a move (shared by the API and `relay projects move`), reading and saving it."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

import asyncpg

from common.ids import uuid7
from common.problems import FieldError, Problem
from router.moves.types import Progress

COLUMNS = """id, project_id, from_region, to_region, state, step, progress, start_epoch, fence_epoch, flip_epoch,
             attempts, last_error, receipt, requested_by, created_at, updated_at, fenced_at, flipped_at, finished_at"""
DIRECTORY = "id, name, region, state::text AS state, epoch"


async def start(conn: asyncpg.Connection, project_id: uuid.UUID, to_region: str, regions: Collection[str],
                requested_by: uuid.UUID | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Record a move and mark the project `copying` in the directory; (move row, directory row).

    422 for a region that is not configured, 409 when the project is already there, not active (being
    provisioned, or moving already), 404 when there is no such project.
    """
    if to_region not in regions:
        raise Problem(422, "unknown region", errors=[FieldError("/to_region", f"one of {', '.join(sorted(regions))}")])
    async with conn.transaction():
        project = await conn.fetchrow(f"SELECT {DIRECTORY} FROM project_directory WHERE id = $1 FOR UPDATE",
                                      project_id)
        if project is None or project["state"] == "purged":
            raise Problem(404, "no such project")
        if project["region"] == to_region:
            raise Problem(409, f"the project already lives in {to_region}")
        if project["state"] != "active":
            detail = ("a move of this project is already under way" if project["state"] in
                      ("copying", "fenced", "flipped") else f"the project is {project['state']}; it cannot move now")
            raise Problem(409, detail)
        try:
            move = await conn.fetchrow(
                f"""INSERT INTO moves (id, project_id, from_region, to_region, start_epoch, requested_by)
                    VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}""",
                uuid7(), project_id, project["region"], to_region, project["epoch"], requested_by)
        except asyncpg.UniqueViolationError:
            raise Problem(409, "a move of this project is already under way") from None
        directory = await conn.fetchrow(
            f"""UPDATE project_directory SET state = 'copying', updated_at = now() WHERE id = $1
                RETURNING {DIRECTORY}""", project_id)
    assert move is not None and directory is not None
    return dict(move), dict(directory)


async def latest(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID) -> dict[str, Any] | None:
    """The project's most recent move."""
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM moves WHERE project_id = $1 ORDER BY created_at DESC LIMIT 1", project_id)
    return None if row is None else dict(row)


async def load(conn: asyncpg.Connection | asyncpg.Pool, move_id: uuid.UUID) -> dict[str, Any] | None:
    """One move."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM moves WHERE id = $1", move_id)
    return None if row is None else dict(row)


async def save(pool: asyncpg.Pool, move_id: uuid.UUID, progress: Progress, step: str) -> None:
    """Record progress after a batch (what a resumed driver goes on from)."""
    await pool.execute("UPDATE moves SET progress = $2, step = $3, updated_at = now() WHERE id = $1",
                       move_id, progress, step)


async def failed_attempt(pool: asyncpg.Pool, move_id: uuid.UUID, error: str) -> int:
    """Count a failed attempt at the current step; the number of attempts so far.

    While an abandoned move is undone, its error stays the reason it was abandoned (undo failures are logged).
    """
    attempts: int = await pool.fetchval(
        """UPDATE moves SET attempts = attempts + 1, updated_at = now(),
                            last_error = CASE WHEN state = 'aborting' THEN last_error ELSE $2 END
            WHERE id = $1 RETURNING attempts""", move_id, error[:1000])
    return attempts


async def succeeded(pool: asyncpg.Pool, move_id: uuid.UUID) -> None:
    """A step went through: the retry count starts again (the last error stays visible until then); an
    abandoned move keeps the reason it was abandoned for good."""
    await pool.execute("UPDATE moves SET attempts = 0, last_error = CASE WHEN state IN ('aborting', 'failed')"
                       " THEN last_error END WHERE id = $1 AND attempts > 0", move_id)
