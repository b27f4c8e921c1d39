"""Operator commands: what runs where, read from the stores and services themselves.

They find the system from a `relay dev` state dir (its topology.json) or from explicit
URLs, so the same commands work against a deployment with the right variables set:
RELAY_ROUTER_URL, RELAY_ROUTER_DATABASE_URL, RELAY_<REGION>_DATABASE_URL, RELAY_<REGION>_REDIS_URL.
Every command prints a table for people and `--json` for scripts.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from common.migrate import status as migration_status


def topology(state_dir: str) -> dict[str, Any]:
    """The running system: topology.json of `relay dev`, overridden by RELAY_* variables when set."""
    path = Path(state_dir) / "topology.json"
    topo: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"router": {}, "cells": {}}
    router = topo.setdefault("router", {})
    router["url"] = os.environ.get("RELAY_ROUTER_URL", router.get("url", ""))
    router["database_url"] = os.environ.get("RELAY_ROUTER_DATABASE_URL", router.get("database_url", ""))
    for name, value in os.environ.items():
        if name.startswith("RELAY_") and name.endswith(("_DATABASE_URL", "_REDIS_URL")) and "ROUTER" not in name:
            region = name[len("RELAY_"):].rsplit("_", 2)[0].lower().replace("_", "-")
            field = "database_url" if name.endswith("_DATABASE_URL") else "redis_url"
            topo["cells"].setdefault(region, {})[field] = value
    if not router["url"] and not topo["cells"]:
        raise SystemExit(f"relay: no running system found (no {path}; set RELAY_ROUTER_URL or --state-dir)")
    return topo


def emit(rows: list[dict[str, Any]], as_json: bool, columns: list[str]) -> None:
    """Print rows as JSON lines-friendly JSON, or as an aligned table."""
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def regions(state_dir: str, as_json: bool) -> int:
    """`relay regions`: every region and its health as the router sees it."""
    topo = topology(state_dir)
    with httpx.Client(trust_env=False, timeout=10) as client:
        data = client.get(topo["router"]["url"] + "/v1/regions").json()["data"]
    emit(data, as_json, ["name", "tag", "status", "breaker", "in_flight"])
    return 0 if all(r["status"] == "ok" for r in data) else 1


async def _fetch(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


def projects(state_dir: str, region: str | None, as_json: bool) -> int:
    """`relay projects`: every project, where it lives, its state and how many keys it has."""
    topo = topology(state_dir)
    rows = asyncio.run(_fetch(
        topo["router"]["database_url"],
        """SELECT p.id, p.name, p.region, p.state::text AS state, p.epoch, p.created_at,
                  (SELECT count(*) FROM key_directory k WHERE k.project_id = p.id AND NOT k.revoked) AS keys
             FROM project_directory p WHERE $1::text IS NULL OR p.region = $1 ORDER BY p.created_at""", region))
    emit(rows, as_json, ["id", "name", "region", "state", "epoch", "keys"])
    return 0


def keys(state_dir: str, prefix: str, as_json: bool) -> int:
    """`relay keys PREFIX`: the key directory's entries starting with a prefix (never a secret)."""
    topo = topology(state_dir)
    rows = asyncio.run(_fetch(
        topo["router"]["database_url"],
        """SELECT k.key_prefix, k.key_id, k.project_id, p.name AS project, k.region, k.revoked, k.pending
             FROM key_directory k JOIN project_directory p ON p.id = k.project_id
            WHERE k.key_prefix LIKE $1 || '%' ORDER BY k.key_prefix LIMIT 500""", prefix))
    emit(rows, as_json, ["key_prefix", "project", "region", "revoked", "pending", "project_id"])
    return 0 if rows else 1


def schema(state_dir: str, as_json: bool, migrations: dict[str, Path]) -> int:
    """`relay db status --all`: migration status of the router's and every cell's database."""
    topo = topology(state_dir)
    stores = [("router", topo["router"]["database_url"], migrations["router"])]
    stores += [(region, c["database_url"], migrations["cell"]) for region, c in topo["cells"].items()]
    rows = []
    for name, dsn, directory in stores:
        found = asyncio.run(migration_status(dsn, directory))
        pending = [m for m, done in found if not done]
        rows.append({"store": name, "applied": sum(done for _, done in found), "pending": len(pending),
                     "pending_files": pending})
    emit(rows, as_json, ["store", "applied", "pending", "pending_files"])
    return 0 if all(not r["pending"] for r in rows) else 1


def queue(state_dir: str, as_json: bool) -> int:
    """`relay queue`: per region, the outbox backlog, the oldest pending row, and the saq queue's state."""
    from saq import Queue

    topo = topology(state_dir)

    async def one(region: str, cell: dict[str, Any]) -> dict[str, Any]:
        backlog = await _fetch(cell["database_url"],
                               """SELECT count(*) AS pending, min(created_at) AS oldest FROM outbox
                                   WHERE dispatched_at IS NULL""")
        dead = None
        if (await _fetch(cell["database_url"], "SELECT to_regclass('dead_letters') IS NOT NULL AS ok"))[0]["ok"]:
            dead = (await _fetch(cell["database_url"],
                                 "SELECT count(*) AS n FROM dead_letters WHERE retried_at IS NULL"))[0]["n"]
        row = {"region": region, "outbox_pending": backlog[0]["pending"], "oldest_pending": backlog[0]["oldest"],
               "dead_letters": dead}
        if cell.get("redis_url"):
            q = Queue.from_url(cell["redis_url"], name=f"relay-{region}")
            try:
                info = await q.info()
                row.update({"queued": info.get("queued"), "active": info.get("active"),
                            "scheduled": info.get("scheduled"), "workers": len(info.get("workers", {}))})
            finally:
                await q.disconnect()
        return row

    async def every() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(r, c) for r, c in topo["cells"].items())))

    rows = asyncio.run(every())
    emit(rows, as_json, ["region", "outbox_pending", "oldest_pending", "queued", "active", "scheduled", "workers",
                         "dead_letters"])
    return 0

