"""`relay jobs …`: an operator's view of a cell's queue — dead letters, retries, maintenance runs on demand.

Each command talks to a cell's Postgres only (never Redis: the outbox is the
way in, so these work while the queue is down). Which cell: `--database-url`,
else the cells of `relay dev`'s `topology.json` when `--state-dir` is given,
else `RELAY_DATABASE_URL` (a shell in the region's deployment), else
`.relay/topology.json`; `--region` narrows a topology to one cell.

    relay jobs dead [--region R] [--json] [--all]      dead letters, newest first
    relay jobs retry ID [--region R]                   re-enqueue one (once)
    relay jobs run reconcile|retention|resign --project ID
                                                       run a maintenance job for a project now
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

TASKS = ("reconcile", "retention", "resign")


class CliError(Exception):
    """A problem to report in one line, with exit status 1."""


def configure(parser: argparse.ArgumentParser) -> None:
    """The `jobs` subcommands and their options."""
    sub = parser.add_subparsers(dest="jobs_command", required=True)

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument("--region", help="one region of the topology (default: every cell it lists)")
        p.add_argument("--state-dir", help="relay dev's state dir holding topology.json (default .relay)")
        p.add_argument("--database-url", help="the cell's Postgres (default RELAY_DATABASE_URL)")

    dead = sub.add_parser("dead", help="list jobs that exhausted their retries, newest first")
    where(dead)
    dead.add_argument("--json", action="store_true", help="print JSON instead of a table")
    dead.add_argument("--all", action="store_true", help="include dead letters already retried")
    dead.add_argument("--limit", type=int, default=200, help="at most this many per cell (default 200)")
    retry = sub.add_parser("retry", help="re-enqueue one dead letter for its one consumer")
    retry.add_argument("id", help="the dead letter's id (from `relay jobs dead`)")
    where(retry)
    run = sub.add_parser("run", help="enqueue a maintenance job for one project now")
    run.add_argument("task", choices=TASKS, help="reconcile counters, apply retention, or re-sign the duplicate "
                                                 "signatures an earlier enrichment method wrote")
    run.add_argument("--project", required=True, help="the project's id")
    where(run)


def cells(args: argparse.Namespace) -> dict[str, str]:
    """Region (or a label) → Postgres URL of every cell the command addresses."""
    region = args.region
    if args.database_url:
        return {region or os.environ.get("RELAY_REGION") or "cell": args.database_url}
    if args.state_dir is None and (url := os.environ.get("RELAY_DATABASE_URL")):
        return {region or os.environ.get("RELAY_REGION") or "cell": url}
    path = Path(args.state_dir or ".relay") / "topology.json"
    try:
        topology = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"no topology at {path} ({type(exc).__name__}); pass --database-url or --state-dir") from exc
    found: dict[str, str] = {r: c["database_url"] for r, c in topology.get("cells", {}).items()}
    if region is not None:
        if region not in found:
            raise CliError(f"no region {region!r} in {path} (regions: {', '.join(sorted(found))})")
        return {region: found[region]}
    return found


def _id(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise CliError(f"{what} {text!r} is not a UUID") from exc


def run(args: argparse.Namespace) -> int:
    """Run one `relay jobs` command; its exit status."""
    try:
        targets = cells(args)
        if args.jobs_command == "dead":
            if not 1 <= args.limit <= 10_000:
                raise CliError("--limit must be from 1 to 10000")
            return asyncio.run(_dead(targets, args))
        if args.jobs_command == "retry":
            return asyncio.run(_retry(targets, _id(args.id, "dead letter id")))
        return asyncio.run(_run(targets, args.task, _id(args.project, "project id")))
    except CliError as exc:
        print(f"relay jobs: {exc}", file=sys.stderr)
        return 1


@contextlib.asynccontextmanager
async def _connect(region: str, url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on one cell's database, closed on the way out."""
    from common.pg import create_pool

    try:
        pool = await create_pool(url, 2, min_size=1)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot reach the {region} database ({type(exc).__name__})") from exc
    try:
        yield pool
    finally:
        await pool.close()


async def _dead(targets: dict[str, str], args: argparse.Namespace) -> int:
    import msgspec

    from cell.maintenance import dead_letters

    found: list[dead_letters.DeadLetter] = []
    for region, url in targets.items():
        async with _connect(region, url) as pool:
            letters = await dead_letters.listing(pool, include_retried=args.all, limit=args.limit)
        for letter in letters:
            letter.region = region
            found.append(letter)
    found.sort(key=lambda d: (d.failed_at, d.id), reverse=True)
    if args.json:
        print(msgspec.json.encode(found).decode())
        return 0
    if not found:
        print("no dead letters")
        return 0
    rows = [("ID", "REGION", "FAILED AT", "JOB", "ATTEMPTS", "PROJECT", "RETRIED", "ERROR")]
    for d in found:
        last = (d.error or "").strip().splitlines()[-1:] or [""]
        rows.append((str(d.id), d.region or "", d.failed_at.strftime("%Y-%m-%d %H:%M:%S"), d.job, str(d.attempts),
                     str(d.project_id or "-"), d.retried_at.strftime("%Y-%m-%d %H:%M:%S") if d.retried_at else "-",
                     last[0][:80]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0


async def _retry(targets: dict[str, str], letter_id: uuid.UUID) -> int:
    from cell.maintenance import dead_letters

    for region, url in targets.items():
        async with _connect(region, url) as pool, pool.acquire() as conn:
            try:
                outbox_id = await dead_letters.retry(conn, letter_id)
            except dead_letters.AlreadyRetried as exc:
                raise CliError(f"dead letter {letter_id} was {exc}") from exc
        if outbox_id is not None:
            print(f"dead letter {letter_id} re-enqueued in {region} as outbox row {outbox_id}")
            return 0
    raise CliError(f"no dead letter {letter_id} in {', '.join(targets)}")


async def _run(targets: dict[str, str], task: str, project_id: uuid.UUID) -> int:
    from cell.enrichment.jobs import RESIGN
    from cell.maintenance.jobs import RECONCILE, RETENTION

    kind = {"reconcile": RECONCILE, "retention": RETENTION, "resign": RESIGN}[task]
    for region, url in targets.items():
        async with _connect(region, url) as pool:
            outbox_id = await pool.fetchval(
                """INSERT INTO outbox (project_id, kind, payload)
                   SELECT id, $2, jsonb_build_object('project_id', id::text) FROM projects WHERE id = $1
                   RETURNING id""", project_id, kind)
        if outbox_id is not None:
            print(f"{kind} for project {project_id} enqueued in {region} as outbox row {outbox_id}")
            return 0
    raise CliError(f"no project {project_id} in {', '.join(targets)}")
