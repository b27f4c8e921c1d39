"""`relay secrets rotate --region R`: seal every stored secret of a region again with its newest key.

Rotation of a cell's `RELAY_SECRET_KEY`: put the new key in front of the ring (`v2:<new>,v1:<old>`),
restart the region's processes (they read every version and seal new values with the newest), run this,
then drop the old entry. It finds the region's database like the other operator commands
(`RELAY_<REGION>_DATABASE_URL`, or a `relay dev` state dir) and its key ring in `RELAY_SECRET_KEY`, or in
the state dir's `secrets.json` for `relay dev`. Each value is re-sealed on its own and only if unchanged
meanwhile, so running it twice, or while the cell serves, is safe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from cell import secrets
from cell.integrations import queries as integrations
from cell.projects import secret as project_secret
from cell.users import identity
from cell.webhooks import queries as webhooks
from common.pg import create_pool
from common.settings import SettingsError
from relay.ops import emit, topology


def key_ring(state_dir: str, region: str) -> str:
    """The region's key ring: RELAY_SECRET_KEY, else what `relay dev` generated for it."""
    ring = os.environ.get("RELAY_SECRET_KEY")
    if not ring:
        path = Path(state_dir) / "secrets.json"
        stored = json.loads(path.read_text()) if path.exists() else {}
        ring = stored.get(f"{region}:secret_key")
    if not ring:
        raise SettingsError(f"RELAY_SECRET_KEY: not set, and no key for {region} in {state_dir}/secrets.json")
    try:
        secrets.ring(ring)
    except ValueError as exc:
        raise SettingsError(f"RELAY_SECRET_KEY: {exc}") from None
    return str(ring)


async def rotate(dsn: str, ring: str) -> dict[str, int]:
    """Re-seal every sealed value in one region's database; how many changed, per kind."""
    pool = await create_pool(dsn, 2)
    try:
        sealed = await project_secret.seal_plain(pool, ring)
        return {"project secrets": sealed + await project_secret.reseal(pool, ring),
                "identity secrets": await identity.reseal(pool, ring),
                "webhook secrets": await webhooks.reseal(pool, ring),
                "integrations": await integrations.reseal(pool, ring)}
    finally:
        await pool.close()


def run(args: argparse.Namespace) -> int:
    """Entry point of `relay secrets …`."""
    cell = topology(args.state_dir)["cells"].get(args.region)
    if not cell or not cell.get("database_url"):
        raise SystemExit(f"relay: no database for region {args.region} (set RELAY_"
                         f"{args.region.upper().replace('-', '_')}_DATABASE_URL or --state-dir)")
    ring = key_ring(args.state_dir, args.region)
    counts = asyncio.run(rotate(cell["database_url"], ring))
    emit([{"kind": kind, "resealed": n, "key": secrets.newest(ring)} for kind, n in counts.items()], args.json,
         ["kind", "resealed", "key"])
    return 0
