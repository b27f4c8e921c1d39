"""SQL for integrations, and the workers' way in: `load_integration` opens the sealed config."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from cell import secrets
from cell.integrations.types import CONFIG_TYPES, ProviderConfig, purpose, unseal
from cell.settings import CellSettings

COLUMNS = "id, provider::text AS provider, enabled, config, created_at, updated_at, last_sync_at"


async def get(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID, provider: str, *,
              lock: bool = False) -> asyncpg.Record | None:
    """The project's integration with this provider; `lock` holds it for an update in this transaction."""
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM integrations WHERE project_id = $1 AND provider = $2"
        + (" FOR UPDATE" if lock else ""), project_id, provider)


async def list_all(pool: asyncpg.Pool, project_id: uuid.UUID) -> list[asyncpg.Record]:
    """Every integration of the project (at most one per provider)."""
    rows: list[asyncpg.Record] = await pool.fetch(
        f"SELECT {COLUMNS} FROM integrations WHERE project_id = $1 ORDER BY provider", project_id)
    return rows


async def insert(conn: asyncpg.Connection, row_id: uuid.UUID, project_id: uuid.UUID, provider: str,
                 enabled: bool, config: dict[str, Any]) -> asyncpg.Record | None:
    """Create the integration; None when a concurrent request created it first."""
    return await conn.fetchrow(
        f"""INSERT INTO integrations (id, project_id, provider, enabled, config) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (project_id, provider) DO NOTHING RETURNING {COLUMNS}""",
        row_id, project_id, provider, enabled, config)


async def replace(conn: asyncpg.Connection, project_id: uuid.UUID, provider: str, enabled: bool | None,
                  config: dict[str, Any]) -> asyncpg.Record | None:
    """Replace the config (and `enabled` unless None) of an existing integration."""
    return await conn.fetchrow(
        f"""UPDATE integrations SET config = $3, enabled = coalesce($4, enabled), updated_at = now()
             WHERE project_id = $1 AND provider = $2 RETURNING {COLUMNS}""",
        project_id, provider, config, enabled)


async def set_enabled(conn: asyncpg.Connection, project_id: uuid.UUID, provider: str,
                      enabled: bool) -> asyncpg.Record | None:
    """Switch an integration on or off without touching its config."""
    return await conn.fetchrow(
        f"""UPDATE integrations SET enabled = $3, updated_at = now()
             WHERE project_id = $1 AND provider = $2 RETURNING {COLUMNS}""", project_id, provider, enabled)


async def remove(conn: asyncpg.Connection, project_id: uuid.UUID, provider: str) -> uuid.UUID | None:
    """Delete the integration (its sealed secrets with it); the id, or None when there was none."""
    row_id: uuid.UUID | None = await conn.fetchval(
        "DELETE FROM integrations WHERE project_id = $1 AND provider = $2 RETURNING id", project_id, provider)
    return row_id


async def load_integration(pool: asyncpg.Pool | asyncpg.Connection, settings: CellSettings,
                           project_id: uuid.UUID, provider: str) -> ProviderConfig | None:
    """The enabled integration's config with its secrets opened, or None if absent or switched off.

    For the workers that call Linear, Jira, GitHub, Slack or SMTP. Raises
    `cell.secrets.SecretError` when a secret does not open (the cell key changed),
    which a job should treat as a configuration error, not retry forever.
    The workers must still pass its URLs through `cell.netguard.check_url`.
    """
    row = await pool.fetchrow(
        "SELECT config FROM integrations WHERE project_id = $1 AND provider = $2 AND enabled",
        project_id, provider)
    if row is None:
        return None
    return unseal(settings.secret_key, project_id, provider, row["config"])


async def mark_synced(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID, provider: str) -> None:
    """Record that a worker just talked to the provider successfully (shown as `last_sync_at`)."""
    await conn.execute(
        "UPDATE integrations SET last_sync_at = now() WHERE project_id = $1 AND provider = $2", project_id, provider)


async def reseal(pool: asyncpg.Pool, secret_key: str) -> int:
    """Seal every integration's secret fields again with the key ring's newest key (`relay secrets rotate`);
    the number of integrations changed."""
    changed = 0
    for row in await pool.fetch("SELECT id, project_id, provider::text AS provider, config FROM integrations"):
        config = dict(row["config"])
        for name in CONFIG_TYPES[row["provider"]].SECRETS:
            value = config.get(name)
            if isinstance(value, str) and secrets.is_sealed(value):
                again = secrets.reseal(secret_key, row["project_id"], purpose(row["provider"], name), value)
                if again is not None:
                    config[name] = again
        if config != row["config"]:
            await pool.execute("UPDATE integrations SET config = $2 WHERE id = $1 AND config = $3",
                               row["id"], config, row["config"])
            changed += 1
    return changed
