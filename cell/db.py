"""Cell-specific database set-up."""

from __future__ import annotations

import asyncpg


async def ensure_region(dsn: str, region: str) -> None:
    """Make the `region` enum know this cell's region, so a new region needs config, not code.

    `ALTER TYPE … ADD VALUE` must run outside a transaction, so it is not a migration.
    The region name was validated against a strict pattern by the settings.
    """
    conn = await asyncpg.connect(dsn)
    try:
        known = await conn.fetchval("SELECT $1 = ANY(enum_range(NULL::region)::text[])", region)
        if not known:
            await conn.execute(f"ALTER TYPE region ADD VALUE IF NOT EXISTS '{region}'")
    finally:
        await conn.close()
