"""Keeping every router's map in step with a move: publish a project's entries, or reload them after a 421."""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg

from router.directory import KEY_COLUMNS, Change, KeyEntry, ProjectEntry, publish
from router.state import RouterState

log = logging.getLogger("relay.router.moves")
_PROJECT = "SELECT id, name, region, state::text AS state, epoch FROM project_directory WHERE id = $1"
_KEYS = f"SELECT {KEY_COLUMNS} FROM key_directory WHERE project_id = $1"


async def _entries(st: RouterState, project_id: uuid.UUID) -> tuple[ProjectEntry | None, list[KeyEntry]]:
    async with st.pool.acquire() as conn:
        project = await conn.fetchrow(_PROJECT, project_id)
        keys = await conn.fetch(_KEYS, project_id)
    return (ProjectEntry(**dict(project)) if project else None), [KeyEntry.of(k) for k in keys]


async def announce(st: RouterState, project_id: uuid.UUID) -> None:
    """Publish the project's directory entry and all its keys, as the control DB has them, to every router."""
    project, keys = await _entries(st, project_id)
    if project is not None:
        await publish(st.redis, st.directory, Change(project=project))
    for key in keys:
        await publish(st.redis, st.directory, Change(key=key))


async def reload(st: RouterState, project_id: uuid.UUID) -> None:
    """A cell answered 421: this router's entry may be stale; read it again (this process only)."""
    try:
        project, keys = await asyncio.wait_for(_entries(st, project_id), 2.0)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("directory entry not reloaded after a 421 (%s)", type(exc).__name__)
        return
    if project is not None:
        st.directory.apply(Change(project=project))
    for key in keys:
        st.directory.apply(Change(key=key))
