"""The `relay` command line: `dev`, `router`, `cell`, `worker`, `db migrate`, `jobs`, `residency`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import cell
import router
from common.settings import SettingsError
from relay import jobs_cli, moves_cli, residency

# Migrations ship inside their packages, so an installed image finds them too.
MIGRATIONS = {"router": Path(router.__file__).parent / "migrations", "cell": Path(cell.__file__).parent / "migrations"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Relay: in-app feedback with data residency.")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run router, us-west and eu-west cells with their workers and stores")
    dev.add_argument("--state-dir", default=".relay", help="where embedded stores keep data (default .relay/)")
    dev.add_argument("--port", type=int, default=8000, help="router port; cells follow (default 8000)")

    sub.add_parser("router", help="run the global router (settings from RELAY_* variables)")
    cell = sub.add_parser("cell", help="run one region's cell API")
    cell.add_argument("--region", help="region to serve (or RELAY_REGION)")
    worker = sub.add_parser("worker", help="run one region's workers")
    worker.add_argument("--region", help="region to work for (or RELAY_REGION)")

    def ops(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text)
        p.add_argument("--state-dir", default=".relay", help="a relay dev state dir (its topology.json)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    ops("regions", "regions and their health as the router sees them")
    projects = ops("projects", "projects and where they live; `projects move` moves one to another region")
    projects.add_argument("--region", help="only this region")
    moves_cli.configure(projects)
    ops("keys", "API keys by prefix (never secrets)").add_argument("prefix", help="e.g. rk_eu_ or rk_eu_ab12cd")
    ops("queue", "per region: outbox backlog, queue depth, workers, dead letters")

    jobs = sub.add_parser("jobs", help="a cell's job queue: dead letters, retries, maintenance runs")
    jobs_cli.configure(jobs)

    db = sub.add_parser("db", help="database schema")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    for name, text in (("migrate", "apply pending migrations"), ("status", "list migrations and whether applied")):
        p = dbsub.add_parser(name, help=text)
        p.add_argument("--target", choices=sorted(MIGRATIONS), help="which schema")
        p.add_argument("--database-url", help="Postgres URL (default RELAY_DATABASE_URL)")
        p.add_argument("--all", action="store_true", help="every store of a running system (with --state-dir)")
        p.add_argument("--state-dir", default=".relay", help="a relay dev state dir (its topology.json)")
        p.add_argument("--json", action="store_true", help="machine-readable output (with --all)")
    residency.add_parser(sub)
    secrets = sub.add_parser("secrets", help="secrets at rest: `secrets rotate` re-seals a region's")
    rotate = secrets.add_subparsers(dest="secrets_command", required=True).add_parser(
        "rotate", help="re-seal every stored secret of a region with its newest key")
    rotate.add_argument("--region", required=True, help="the region whose secrets to re-seal")
    rotate.add_argument("--state-dir", default=".relay", help="a relay dev state dir (its topology.json)")
    rotate.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `relay` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev":
            from relay.devstack import run_dev

            return run_dev(Path(args.state_dir), args.port)
        if args.command == "router":
            from common.serve import serve
            from router.app import create_app as router_app
            from router.settings import from_env as router_settings

            rs = router_settings()
            serve(router_app(rs), rs.host, rs.port, name="router")
            return 0
        if args.command in ("cell", "worker"):
            if args.region:
                os.environ["RELAY_REGION"] = args.region
            if args.command == "cell":
                from cell.app import create_app as cell_app
                from cell.settings import from_env as cell_settings
                from common.serve import serve

                cs = cell_settings()
                serve(cell_app(cs), cs.host, cs.port, name="cell", region=cs.region, tls=cs.tls)
                return 0
            from cell.worker import run_worker

            return run_worker()
        if args.command == "db":
            return _db(args)
        if args.command == "jobs":
            return jobs_cli.run(args)
        if args.command in ("regions", "projects", "keys", "queue"):
            from relay import ops

            if args.command == "regions":
                return ops.regions(args.state_dir, args.json)
            if args.command == "projects" and args.projects_command == "move":
                return moves_cli.run(args)
            if args.command == "projects":
                return ops.projects(args.state_dir, args.region, args.json)
            if args.command == "keys":
                return ops.keys(args.state_dir, args.prefix, args.json)
            return ops.queue(args.state_dir, args.json)
        if args.command == "residency":
            return residency.run(args)
        if args.command == "secrets":
            from relay import secrets_cli  # the cell's modules, loaded only for this command

            return secrets_cli.run(args)
    except SettingsError as exc:
        print(f"relay: bad setting: {exc}", file=sys.stderr)
        return 2
    return 2


def _db(args: argparse.Namespace) -> int:
    from common.migrate import MigrationError, migrate, status

    if args.all:
        from relay import ops

        return ops.schema(args.state_dir, args.json, MIGRATIONS)
    if args.target is None:
        raise SettingsError("--target router|cell is required (or --all for every store of a running system)")
    dsn = args.database_url or os.environ.get("RELAY_DATABASE_URL")
    if not dsn:
        raise SettingsError("RELAY_DATABASE_URL: required (or pass --database-url)")
    directory = MIGRATIONS[args.target]
    try:
        if args.db_command == "migrate":
            applied = asyncio.run(migrate(dsn, directory))
            print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        else:
            for name, done in asyncio.run(status(dsn, directory)):
                print(f"{'applied' if done else 'pending'}  {name}")
    except MigrationError as exc:
        print(f"relay: migration error: {exc}", file=sys.stderr)
        return 1
    return 0
