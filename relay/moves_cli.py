"""`relay projects move PROJECT --to REGION [--wait] [--json]`: an operator moves a project between regions.

The command records the move in the router's control database, exactly as
`POST /v1/projects/{id}/move` does for an owner (same checks, same row), and
the routers' move driver carries it out; `--wait` follows it with a progress
bar until the source is purged (exit 0) or the move is abandoned (exit 1). If
the project is already moving, `--wait` follows that move. Where the system is:
a `relay dev` state dir's topology.json, or RELAY_ROUTER_DATABASE_URL (and
RELAY_ROUTER_URL, RELAY_ROUTER_REDIS_URL) for a deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any, TextIO

import asyncpg
import httpx
import msgspec

from common.problems import Problem
from router.directory import CHANNEL, Change, ProjectEntry
from router.moves import store
from router.moves.types import Move, shown

FINAL = ("purged", "failed")
BAR = 30


def configure(parser: argparse.ArgumentParser) -> None:
    """`relay projects move …` (the bare `relay projects` keeps listing projects)."""
    sub = parser.add_subparsers(dest="projects_command", required=False)
    move = sub.add_parser("move", help="move a project to another region, keys and all")
    move.add_argument("project", help="the project's id")
    move.add_argument("--to", required=True, dest="to_region", help="the region to move it to")
    move.add_argument("--wait", action="store_true", help="follow the move until it is finished")
    move.add_argument("--poll", type=float, default=0.5, help="seconds between progress reads (with --wait)")
    # SUPPRESS: given before `move`, the parent's value stands.
    move.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the move as JSON")
    move.add_argument("--state-dir", default=argparse.SUPPRESS, help="a relay dev state dir (its topology.json)")


def run(args: argparse.Namespace) -> int:
    """Start (or join) the move, then report it; the exit status says how it ended."""
    from relay.ops import topology

    try:
        project_id = uuid.UUID(args.project)
    except ValueError:
        print(f"relay: {args.project!r} is not a project id", file=sys.stderr)
        return 2
    topo = topology(args.state_dir)
    router = topo["router"]
    if not router.get("database_url"):
        print("relay: the router's database is unknown (set RELAY_ROUTER_DATABASE_URL or --state-dir)",
              file=sys.stderr)
        return 2
    regions = _regions(router.get("url", ""), topo.get("cells", {}))
    as_json: bool = args.json
    try:
        move = asyncio.run(_start(router["database_url"], router.get("redis_url")
                                  or os.environ.get("RELAY_ROUTER_REDIS_URL"), project_id, args.to_region, regions,
                                  join=args.wait))
        if args.wait:
            move = asyncio.run(_follow(router["database_url"], move, args.poll, None if as_json else sys.stderr))
    except Problem as problem:
        if as_json:
            print(json.dumps({"status": problem.status, "detail": problem.detail}))
        else:
            print(f"relay: {problem.detail}", file=sys.stderr)
        return 2 if problem.status == 422 else 1
    if as_json:
        print(msgspec.json.encode(move).decode())
    else:
        print(_summary(move))
    return 1 if move.state == "failed" else 0


def _regions(router_url: str, cells: dict[str, Any]) -> list[str]:
    """The configured regions: as the router lists them, else the topology's cells."""
    if router_url:
        try:
            with httpx.Client(trust_env=False, timeout=5) as client:
                return [r["name"] for r in client.get(router_url + "/v1/regions").json()["data"]]
        except (httpx.HTTPError, ValueError, KeyError):
            pass
    return sorted(cells)


async def _start(dsn: str, redis_url: str | None, project_id: uuid.UUID, to_region: str, regions: list[str], *,
                 join: bool) -> Move:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=lambda v: msgspec.json.encode(v).decode(),
                                  decoder=msgspec.json.decode)
        try:
            row, directory = await store.start(conn, project_id, to_region, regions, None)
        except Problem as problem:
            running = await store.latest(conn, project_id) if problem.status == 409 and join else None
            if running is None or running["state"] in FINAL or running["to_region"] != to_region:
                raise
            return shown(running)
    finally:
        await conn.close()
    if redis_url:  # routers also reload the directory periodically; this only makes it immediate
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        redis = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            await redis.publish(CHANNEL, msgspec.json.encode(Change(project=ProjectEntry(**directory))))
        except (RedisError, OSError):
            pass
        finally:
            await redis.aclose()
    return shown(row)


async def _follow(dsn: str, move: Move, poll: float, out: TextIO | None) -> Move:
    """Read the move until it is finished, drawing progress on `out`."""
    conn = await asyncpg.connect(dsn)
    last = ""
    try:
        await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=lambda v: msgspec.json.encode(v).decode(),
                                  decoder=msgspec.json.decode)
        while True:
            row = await store.load(conn, move.move_id)
            assert row is not None
            move = shown(row)
            if out is not None:
                line = _bar(move)
                if out.isatty():
                    out.write("\r" + line.ljust(len(last)))
                elif line != last:
                    out.write(line + "\n")
                out.flush()
                last = line
            if move.state in FINAL:
                if out is not None and out.isatty():
                    out.write("\n")
                return move
            await asyncio.sleep(poll)
    finally:
        await conn.close()


def _bar(move: Move) -> str:
    """`[#######.....]  45%  copying · copying interactions · 1200/2400 rows, 3/5 objects`."""
    filled = BAR * move.percent // 100
    rows = sum(t.copied for t in move.progress.tables)
    total = sum(max(t.rows, t.copied) for t in move.progress.tables)
    objects = move.progress.objects
    text = (f"[{'#' * filled}{'.' * (BAR - filled)}] {move.percent:3d}%  {move.state} · {move.step} · "
            f"{rows}/{total} rows, {objects.copied}/{objects.total} objects")
    if move.error and move.state not in FINAL:
        text += f" · retrying: {move.error[:80]}"
    return text


def _summary(move: Move) -> str:
    if move.state == "purged":
        receipt = move.receipt or {}
        return (f"moved {move.project_id} from {move.from_region} to {move.to_region}; "
                f"{move.from_region} purged (deletion receipt #{receipt.get('seq')}, hash {receipt.get('hash')})")
    if move.state == "failed":
        return f"move {move.move_id} abandoned; the project stays in {move.from_region}: {move.error}"
    started = time.strftime("%H:%M:%S", time.localtime(move.created_at.timestamp()))
    return (f"move {move.move_id} of {move.project_id} to {move.to_region} started at {started} ({move.state}); "
            f"follow it with --wait or GET /v1/projects/{move.project_id}/move")
