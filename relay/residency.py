"""`relay residency …`: prove where data lives, from the stores themselves.

- `audit --region R` reads the region's Postgres and object storage directly
  (URLs from `topology.json`, or `--database-url`/`--object-store`), audits them
  (`cell.residency.audit`) and records the report as the next signed link of the
  cell's receipt chain. Signing needs the cell's secret key: `RELAY_SECRET_KEY`
  (when `RELAY_REGION` is unset or is R) or, for `relay dev`, its
  `secrets.json`. Exit 1 when anything is foreign, orphaned or unattributed.
- `canary plant --project P` writes unique markers into the project's data
  through the public API (end user, session, interaction text and logs,
  an attachment, a chat, a feedback suggestion, a replay chunk) with an ingest
  key (`--key`, or one created and revoked again with an admin session) and
  appends them to a canaries file.
- `canary scan` searches every region's database (every column that can hold
  text: text, JSON, arrays, bytea …), object storage (gzip and zip opened) and
  Redis, and the router's control database and Redis. A marker anywhere but in
  its project's home region is a breach (exit 1). Where the home region is
  scanned too, every marker must be found there (exit 3 otherwise): a scanner
  that finds nothing at home proves nothing elsewhere. Each project's result
  is recorded in its home cell's `canary_results` (where markers were looked
  for and found, never a marker), for the dashboard's residency page.
- `verify` checks a receipt chain, from the region's database or an export
  (`export --region R`), and names the first broken link (exit 1).

Reports name tables, columns, object keys and row ids, never the content found.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import secrets
import string
import sys
import time
import uuid
import zipfile
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg
    import httpx

    from cell.residency.receipts import Receipt
    from cell.storage import ObjectStore

MARKER_PREFIX = "relaycanary"
SLOTS = ("user", "email", "name", "trait", "agent", "device", "text", "title", "description", "tag", "console",
         "network", "error", "context", "media", "subject", "chat", "reply", "feedback", "replay")
MAX_INFLATED = 256 * 1024 * 1024
"""A compressed object is opened up to this many bytes (a bomb stops there, and says so)."""
_SKIPPED_TYPES = frozenset({
    "uuid", "integer", "bigint", "smallint", "boolean", "numeric", "real", "double precision", "date",
    "timestamp with time zone", "timestamp without time zone", "time with time zone", "time without time zone",
    "interval", "oid", "pg_lsn",
})
"""Column types that cannot hold a marker; every other column is read as text."""


class ResidencyError(Exception):
    """A command could not run (bad arguments, unreachable store, refused request); exit 2 with the message."""


# -- Arguments ---------------------------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """`relay residency …` and its subcommands (called by relay.cli)."""
    residency = sub.add_parser("residency", help="prove where data lives: audits, canaries, signed receipts")
    commands = residency.add_subparsers(dest="residency_command", required=True)

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", default=".relay", help="a running `relay dev`'s state dir (default .relay)")
        p.add_argument("--topology", help="a topology.json to use instead of the state dir's")

    audit = commands.add_parser("audit", help="audit one region's database and object storage, sign the report")
    audit.add_argument("--region", required=True, help="the region whose stores to audit")
    audit.add_argument("--json", action="store_true",
                       help="print the signed report as JSON (the unsigned body with --no-record)")
    audit.add_argument("--grace", type=float, default=60.0,
                       help="seconds an unreferenced object may be an upload in flight (default 60)")
    audit.add_argument("--no-record", action="store_true", help="do not sign and store the report")
    audit.add_argument("--database-url", help="the region's Postgres (instead of topology.json)")
    audit.add_argument("--object-store", help="the region's object store URL (instead of topology.json)")
    where(audit)

    verify = commands.add_parser("verify", help="check a chain of signed audit reports")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--region", help="read the chain from this region's database")
    source.add_argument("--file", help="read an exported chain (JSON lines; - for stdin)")
    source.add_argument("--database-url", help="read the chain from this Postgres")
    verify.add_argument("--public-key", help="the cell's published key (base64); default: the first report's")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    where(verify)

    export = commands.add_parser("export", help="print a region's chain of signed reports as JSON lines")
    export.add_argument("--region", help="the region whose chain to export")
    export.add_argument("--database-url", help="read the chain from this Postgres")
    export.add_argument("--out", help="write to this file instead of stdout")
    where(export)

    canary = commands.add_parser("canary", help="plant marker strings in a project and scan for them")
    canaries = canary.add_subparsers(dest="canary_command", required=True)
    plant = canaries.add_parser("plant", help="write markers into a project's data through the public API")
    plant.add_argument("--project", required=True, help="the project's id")
    plant.add_argument("--key", default=os.environ.get("RELAY_CANARY_KEY"),
                       help="an API key with the ingest scope (or RELAY_CANARY_KEY); else one is created")
    plant.add_argument("--token", default=os.environ.get("RELAY_ADMIN_TOKEN"),
                       help="an admin session token to create the key with (or RELAY_ADMIN_TOKEN)")
    plant.add_argument("--email", help="log in as this admin (password from RELAY_ADMIN_PASSWORD)")
    plant.add_argument("--router-url", help="the router (default: topology.json's)")
    plant.add_argument("--out", help="canaries file to append to (default STATE_DIR/canaries.jsonl)")
    plant.add_argument("--json", action="store_true", help="print what was planted as JSON")
    where(plant)
    scan = canaries.add_parser("scan", help="search the stores for planted markers; any outside home is a breach")
    scan.add_argument("--canaries", help="canaries file (default STATE_DIR/canaries.jsonl)")
    scan.add_argument("--region", action="append", help="scan only this region (repeatable; default all)")
    scan.add_argument("--no-router", action="store_true", help="do not scan the router's stores")
    scan.add_argument("--no-redis", action="store_true", help="do not scan Redis")
    scan.add_argument("--json", action="store_true", help="print the findings as JSON")
    scan.add_argument("--no-record", action="store_true",
                      help="do not record each project's result in its home cell (the residency page shows them)")
    where(scan)


def run(args: argparse.Namespace) -> int:
    """Dispatch `relay residency …`; 2 with one line on stderr when the command cannot run."""
    commands = {"audit": cmd_audit, "verify": cmd_verify, "export": cmd_export}
    try:
        if args.residency_command == "canary":
            return cmd_plant(args) if args.canary_command == "plant" else cmd_scan(args)
        return commands[args.residency_command](args)
    except ResidencyError as exc:
        print(f"relay residency: {exc}", file=sys.stderr)
        return 2


# -- Where things are ------------------------------------------------------------------------------------------


def topology(args: argparse.Namespace) -> dict[str, Any]:
    """The running topology: `--topology`, else the state dir's `topology.json`."""
    path = Path(args.topology) if args.topology else Path(args.state_dir) / "topology.json"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResidencyError(f"{path}: not found (is `relay dev` running? or pass explicit URLs)") from None
    except ValueError as exc:
        raise ResidencyError(f"{path}: not JSON ({exc})") from None
    return loaded


def _cell(args: argparse.Namespace, region: str) -> dict[str, Any]:
    cells: dict[str, Any] = topology(args).get("cells", {})
    if region not in cells:
        raise ResidencyError(f"no region {region!r} in the topology (regions: {', '.join(sorted(cells))})")
    cell: dict[str, Any] = cells[region]
    return cell


def secret_key(region: str, state_dir: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The cell's secret key, from which its receipt key derives: the environment, or `relay dev`'s secrets."""
    if environ.get("RELAY_SECRET_KEY") and environ.get("RELAY_REGION", region) == region:
        return environ["RELAY_SECRET_KEY"]
    path = state_dir / "secrets.json"
    if path.exists():
        found = json.loads(path.read_text()).get(f"{region}:secret_key")
        return str(found) if found else None
    return None


async def _connect(dsn: str) -> asyncpg.Connection:
    """One connection that speaks JSON as Python objects, like the cell's pool."""
    import asyncpg
    import msgspec

    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ResidencyError(f"cannot connect to the database: {type(exc).__name__}: {exc}") from None
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, schema="pg_catalog", format="text",
                                  encoder=lambda v: msgspec.json.encode(v).decode(), decoder=msgspec.json.decode)
    return conn


# -- audit -----------------------------------------------------------------------------------------------------


async def audit_region(database_url: str, object_store: str, region: str, *, grace: float,
                       secret: str | None) -> tuple[dict[str, Any], Receipt | None]:
    """Audit a region's stores; with the cell's secret, record the report as the next signed receipt."""
    from cell.residency import audit, receipts
    from cell.storage import ObjectStore

    conn = await _connect(database_url)
    try:
        body = await audit.audit_cell(conn, ObjectStore(object_store), region, grace=grace)
        receipt = None
        if secret is not None:
            receipt = await receipts.append(conn, receipts.signing_key(secret, region), body, scope="cell")
    finally:
        await conn.close()
    return body, receipt


def cmd_audit(args: argparse.Namespace) -> int:
    """`relay residency audit`: 0 when every row and object is accounted for, 1 when not."""
    from cell.residency import receipts

    if args.database_url and args.object_store:
        dsn, objects = args.database_url, args.object_store
    else:
        cell = _cell(args, args.region)
        dsn, objects = args.database_url or cell["database_url"], args.object_store or cell["object_store"]
    secret = None if args.no_record else secret_key(args.region, Path(args.state_dir))
    if secret is None and not args.no_record:
        raise ResidencyError(f"cannot sign: no secret key for {args.region} (set RELAY_SECRET_KEY and "
                             "RELAY_REGION, or point --state-dir at relay dev's), or pass --no-record")
    body, receipt = asyncio.run(audit_region(dsn, objects, args.region, grace=args.grace, secret=secret))
    if args.json:
        print(receipts.to_line(receipt) if receipt is not None else json.dumps(body))
    else:
        _print_audit(body, receipt)
    return 0 if body["clean"] else 1


def _print_audit(body: dict[str, Any], receipt: Receipt | None) -> None:
    rows = sum(t["homed"] for t in body["tables"].values())
    print(f"{body['region']}: {len(body['projects'])} homed projects, {rows} rows in "
          f"{sum(1 for t in body['tables'].values() if t['rows'])} tables, {body['objects']['objects']} objects "
          f"({body['objects']['bytes']} bytes)")
    labels = {"foreign_projects": "project rows homed elsewhere", "foreign_rows": "foreign rows",
              "foreign_objects": "foreign objects", "unowned_tables": "unattributed tables",
              "orphan_objects": "orphaned objects", "missing_objects": "missing objects",
              "cross_references": "cross-project references"}
    for kind, label in labels.items():
        total = body["summary"][kind]
        print(f"  {label}: {total or 'none'}")
        for entry in body[kind][:20]:
            print("    " + ", ".join(f"{k}={v}" for k, v in entry.items()))
    if body["recent_objects"]:
        print(f"  unreferenced objects younger than {body['grace_seconds']}s (uploads in flight): "
              f"{body['recent_objects']}")
    print("clean" if body["clean"] else "NOT clean")
    if receipt is not None:
        print(f"report {receipt.seq} hash {receipt.hash} signed by {receipt.public_key}")


# -- verify and export -----------------------------------------------------------------------------------------


async def _stored_chain(dsn: str) -> list[Receipt]:
    from cell.residency import receipts

    conn = await _connect(dsn)
    try:
        return await receipts.chain(conn)
    finally:
        await conn.close()


def _chain_dsn(args: argparse.Namespace) -> str:
    if args.database_url:
        return str(args.database_url)
    if not args.region:
        raise ResidencyError("say whose chain: --region or --database-url")
    return str(_cell(args, args.region)["database_url"])


def read_export(text: str) -> list[Receipt]:
    """A chain from exported JSON lines (blank lines skipped); a line that is no report is an error."""
    from cell.residency import receipts

    chain = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                chain.append(receipts.from_line(line))
            except ValueError as exc:
                raise ResidencyError(f"line {number} is not a report: {exc}") from None
    return chain


def cmd_verify(args: argparse.Namespace) -> int:
    """`relay residency verify`: 0 when the chain is intact, 1 at the first broken link."""
    from cell.residency import receipts

    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        chain = read_export(text)
    else:
        chain = asyncio.run(_stored_chain(_chain_dsn(args)))
    verdict = receipts.verify_chain(chain, args.public_key)
    if args.json:
        import msgspec

        print(msgspec.json.encode(verdict).decode())
    elif verdict.ok:
        print(f"ok: {verdict.reports} reports"
              + (f", {verdict.first_seq}..{verdict.last_seq}, head {verdict.head_hash}" if verdict.reports else "")
              + (f", signed by {verdict.public_key}" if verdict.public_key else ""))
    else:
        print(f"BROKEN at report {verdict.broken_at} (line {verdict.line}): {verdict.reason}")
        if verdict.last_seq is not None:
            print(f"intact up to report {verdict.last_seq}, hash {verdict.head_hash}")
    return 0 if verdict.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    """`relay residency export`: the stored chain as JSON lines, for an auditor to keep and verify."""
    from cell.residency import receipts

    chain = asyncio.run(_stored_chain(_chain_dsn(args)))
    text = "".join(receipts.to_line(r) + "\n" for r in chain)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# -- canary plant ----------------------------------------------------------------------------------------------


@dataclass
class Plant:
    """Markers planted in one project, and where that project lived when they were."""

    project_id: str
    region: str
    markers: dict[str, str]
    planted_at: str = ""
    ids: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"project_id": self.project_id, "region": self.region, "planted_at": self.planted_at,
                "markers": self.markers, "ids": self.ids}


def new_markers() -> dict[str, str]:
    """One marker per slot: letters only, so no privacy rule (cards, credentials, tokens) redacts them."""
    run = "".join(secrets.choice(string.ascii_lowercase) for _ in range(16))
    return {slot: f"{MARKER_PREFIX}{run}{slot}" for slot in SLOTS}


def _ok(response: httpx.Response, what: str, *statuses: int) -> dict[str, Any]:
    if response.status_code not in (statuses or (200, 201)):
        raise ResidencyError(f"{what}: {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def plant(router_url: str, project_id: str, *, key: str | None = None, token: str | None = None,
          markers: dict[str, str] | None = None) -> Plant:
    """Write a marker into every kind of data the public API accepts for a project; returns what went where."""
    import httpx

    m = markers or new_markers()
    with httpx.Client(base_url=router_url, timeout=30, trust_env=False) as client:
        created_key = None
        if key is None:
            if token is None:
                raise ResidencyError("planting needs --key (ingest scope) or an admin session (--token/--email)")
            admin = {"Authorization": f"Bearer {token}"}
            created_key = _ok(client.post(f"/v1/projects/{project_id}/api-keys", headers=admin,
                                          json={"name": "residency canary", "scopes": ["ingest"]}),
                              "creating an ingest key")
            key = str(created_key["key"])
        try:
            return _plant(client, project_id, {"Authorization": f"Bearer {key}"}, m)
        finally:
            if created_key is not None:
                _ok(client.delete(f"/v1/projects/{project_id}/api-keys/{created_key['id']}",
                                  headers={"Authorization": f"Bearer {token}"}), "revoking the canary key")


def _plant(client: httpx.Client, project_id: str, h: dict[str, str], m: dict[str, str]) -> Plant:
    user = {"external_id": m["user"], "email": f"{m['email']}@example.com", "name": m["name"],
            "traits": {"plan": m["trait"]}}
    r = client.post("/v1/ingest/sessions", headers=h,
                    json={"user": user, "user_agent": f"Mozilla/5.0 ({m['agent']})", "device": {"model": m["device"]}})
    session = _ok(r, "starting a session")
    region = r.headers.get("x-relay-region", "")
    interaction = _ok(client.post("/v1/ingest/interactions", headers=h, json={
        "type": "bug", "session_id": session["id"], "user": {"external_id": m["user"]},
        "content": {"text": f"it broke {m['text']}", "title": m["title"], "description": m["description"]},
        "tags": [m["tag"]],
        "logs": {"console": [{"level": "error", "message": m["console"]}],
                 "network": [{"method": "GET", "url": f"https://api.example.com/{m['network']}", "status": 500}],
                 "errors": [{"message": m["error"], "stack": "at app.js:1:1"}]},
        "technical_context": {"url": f"https://app.example.com/{m['context']}"},
    }), "reporting a bug")
    if interaction.get("project_id") not in (None, project_id):
        raise ResidencyError("the key belongs to another project than --project")
    media = _ok(client.post(f"/v1/ingest/interactions/{interaction['id']}/media", params={"kind": "attachment"},
                            headers={**h, "Content-Type": "text/plain"},
                            content=f"attached notes: {m['media']}\n".encode()), "uploading an attachment")
    chat = _ok(client.post("/v1/ingest/conversations", headers=h, json={
        "session_id": session["id"], "user": {"external_id": m["user"]}, "subject": m["subject"],
        "body": f"hello {m['chat']}"}), "opening a conversation")
    _ok(client.post(f"/v1/ingest/conversations/{chat['id']}/messages", json={"body": f"again {m['reply']}"},
                    headers={**h, "X-Relay-Conversation-Token": chat["token"]}), "writing in the conversation")
    feedback = _ok(client.post("/v1/ingest/feedback-items", headers=h, json={
        "title": f"please add {m['feedback']}", "session_id": session["id"]}), "suggesting a feature")
    replay_id = str(uuid.uuid4())
    now = int(time.time() * 1000)
    events = [{"type": 4, "timestamp": now, "data": {"href": "https://app.example.com/", "width": 800, "height": 600}},
              {"type": 3, "timestamp": now + 5, "data": {"source": 5, "text": m["replay"], "id": 7}}]
    _ok(client.post(f"/v1/ingest/replays/{replay_id}/chunks/0", params={"session_id": session["id"]},
                    headers={**h, "Content-Type": "application/json", "Content-Encoding": "gzip"},
                    content=gzip.compress(json.dumps(events).encode())), "uploading a replay chunk")
    _ok(client.post(f"/v1/ingest/replays/{replay_id}/finish", headers=h), "finishing the replay", 202)
    return Plant(project_id=project_id, region=region, markers=m,
                 planted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 ids={"session": session["id"], "interaction": interaction["id"], "media": media["id"],
                      "conversation": chat["id"], "feedback_item": feedback["id"], "replay": replay_id})


def _canaries_path(args: argparse.Namespace, given: str | None) -> Path:
    return Path(given) if given else Path(args.state_dir) / "canaries.jsonl"


def _login(router_url: str, email: str) -> str:
    import httpx

    password = os.environ.get("RELAY_ADMIN_PASSWORD")
    if not password:
        raise ResidencyError("--email needs the password in RELAY_ADMIN_PASSWORD")
    with httpx.Client(base_url=router_url, timeout=30, trust_env=False) as client:
        session = _ok(client.post("/v1/auth/login", json={"email": email, "password": password}), "logging in")
    return str(session["token"])


def cmd_plant(args: argparse.Namespace) -> int:
    """`relay residency canary plant`: plant, then append the markers to the canaries file."""
    try:
        uuid.UUID(args.project)
    except ValueError:
        raise ResidencyError(f"--project: {args.project!r} is not a project id") from None
    router_url = args.router_url or topology(args)["router"]["url"]
    token: str | None = args.token
    if args.key is None and token is None and args.email:
        token = _login(router_url, args.email)
    planted = plant(router_url, args.project, key=args.key, token=token)
    path = _canaries_path(args, args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(planted.to_json()) + "\n")
    if args.json:
        print(json.dumps(planted.to_json()))
    else:
        print(f"planted {len(planted.markers)} markers in project {planted.project_id} ({planted.region}); "
              f"recorded in {path}")
    return 0


# -- canary scan -----------------------------------------------------------------------------------------------


def load_plants(path: Path) -> list[Plant]:
    """Every plant recorded in a canaries file."""
    if not path.exists():
        raise ResidencyError(f"{path}: no canaries planted (run `relay residency canary plant` first)")
    plants = []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            plants.append(Plant(project_id=d["project_id"], region=d["region"], markers=d["markers"],
                                planted_at=d.get("planted_at", ""), ids=d.get("ids", {})))
    return plants


@dataclass(frozen=True)
class Hit:
    """A marker found in a store: where (table.column and row id, or object key, or Redis key), never the data."""

    marker: str
    where: str


async def scan_database(dsn: str, markers: list[str]) -> tuple[list[Hit], dict[str, int]]:
    """Every column that can hold text, of every table, searched case-insensitively for the markers."""
    from cell.residency.audit import ident, read_schema

    conn = await _connect(dsn)
    hits: list[Hit] = []
    tables = columns = rows = 0
    patterns = [f"%{m}%" for m in markers]
    try:
        schema = await read_schema(conn)
        for table in schema.tables:
            readable = {c: t for c, t in table.columns.items() if t not in _SKIPPED_TYPES}
            tables += 1
            rows += await conn.fetchval(f"SELECT count(*) FROM {table.sql}")
            if not readable:
                continue
            columns += len(readable)
            exprs = [f"encode({ident(c)}, 'escape')" if t == "bytea" else f"{ident(c)}::text"
                     for c, t in readable.items()]
            row_id = "id::text" if "id" in table.columns else "NULL"
            query = (f"SELECT {row_id} AS row_id, {', '.join(exprs)} FROM {table.sql} "
                     f"WHERE {' OR '.join(f'{e} ILIKE ANY($1::text[])' for e in exprs)}")
            for row in await conn.fetch(query, patterns):
                for i, column in enumerate(readable, start=1):
                    value = (row[i] or "").lower()
                    hits.extend(Hit(m, f"{table.label}.{column}" + (f" id={row[0]}" if row[0] else ""))
                                for m in markers if m in value)
    finally:
        await conn.close()
    return hits, {"tables": tables, "columns": columns, "rows": rows}


def _texts(data: bytes, name: str) -> list[tuple[str, bytes]]:
    """The object's bytes, and inside them what gzip or zip holds (to MAX_INFLATED)."""
    found = [(name, data)]
    if data[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            inner = inflater.decompress(data, MAX_INFLATED)
        except zlib.error:
            inner = b""
        found.extend(_texts(inner, f"{name} (gunzipped)"))
    elif data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    with archive.open(info) as member:
                        found.extend(_texts(member.read(MAX_INFLATED), f"{name}!{info.filename}"))
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError):
            pass
    return found


async def scan_objects(store: ObjectStore, markers: list[str]) -> tuple[list[Hit], dict[str, int]]:
    """Every object of a store, opened if compressed, searched for the markers."""
    from cell.residency.audit import list_objects

    needles = [(m, m.encode()) for m in markers]
    hits: list[Hit] = []
    objects = await list_objects(store)
    for obj in objects:
        data = await store.get(obj.key)
        for name, text in _texts(data, obj.key):
            lowered = text.lower()
            hits.extend(Hit(m, name) for m, needle in needles if needle in lowered)
    return hits, {"objects": len(objects), "bytes": sum(o.size for o in objects)}


async def scan_redis(url: str, markers: list[str]) -> tuple[list[Hit], dict[str, int]]:
    """Every key of a Redis and its values (strings, hashes, lists, sets, sorted sets, streams)."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    needles = [(m, m.encode()) for m in markers]
    hits: list[Hit] = []
    keys = 0
    client: Any = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        async for name in client.scan_iter(count=500):
            keys += 1
            kind = (await client.type(name)).decode()
            values: list[bytes] = [name]
            if kind == "string":
                values.append(await client.get(name) or b"")
            elif kind == "hash":
                values.extend(b for kv in (await client.hgetall(name)).items() for b in kv)
            elif kind == "list":
                values.extend(await client.lrange(name, 0, -1))
            elif kind == "set":
                values.extend(await client.smembers(name))
            elif kind == "zset":
                values.extend(await client.zrange(name, 0, -1))
            elif kind == "stream":
                values.extend(b for _, entry in await client.xrange(name) for kv in entry.items() for b in kv)
            blob = b"\x00".join(v if isinstance(v, bytes) else str(v).encode() for v in values).lower()
            hits.extend(Hit(m, f"key {name.decode(errors='replace')}") for m, needle in needles if needle in blob)
    except (RedisError, OSError) as exc:
        raise ResidencyError(f"cannot scan Redis: {type(exc).__name__}: {exc}") from None
    finally:
        await client.aclose()
    return hits, {"keys": keys}


async def _homes(router_dsn: str | None, plants: list[Plant]) -> dict[str, str]:
    """Each project's home now: the router's directory when reachable (a project may have moved since)."""
    homes = {p.project_id: p.region for p in plants}
    if router_dsn is None:
        return homes
    try:
        conn = await _connect(router_dsn)
    except ResidencyError as exc:
        print(f"relay residency: the router's directory is unreachable ({exc}); using the regions recorded at "
              "planting", file=sys.stderr)
        return homes
    try:
        rows = await conn.fetch("SELECT id::text AS id, region FROM project_directory WHERE id = ANY($1::uuid[])",
                                list(homes))
    finally:
        await conn.close()
    homes.update({r["id"]: r["region"] for r in rows})
    return homes


async def scan(topo: dict[str, Any], plants: list[Plant], *, regions: list[str] | None = None,
               router: bool = True, redis: bool = True) -> dict[str, Any]:
    """Search the topology's stores for the plants' markers; see the module for what counts as a breach."""
    from cell.storage import ObjectStore

    owner = {marker: (p.project_id, slot) for p in plants for slot, marker in p.markers.items()}
    markers = sorted(owner)
    cells: dict[str, Any] = topo["cells"]
    chosen = regions or sorted(cells)
    unknown = [r for r in chosen if r not in cells]
    if unknown:
        raise ResidencyError(f"no region {', '.join(unknown)} in the topology")
    homes = await _homes(topo["router"]["database_url"] if "router" in topo else None, plants)
    jobs: list[tuple[str, str, str | None, Callable[[], Awaitable[tuple[list[Hit], dict[str, int]]]]]] = []
    for name in chosen:
        cell = cells[name]
        jobs.append((f"{name} database", "database", name, partial(scan_database, cell["database_url"], markers)))
        jobs.append((f"{name} object storage", "object_storage", name,
                     partial(scan_objects, ObjectStore(cell["object_store"]), markers)))
        if redis and cell.get("redis_url"):
            jobs.append((f"{name} redis", "redis", name, partial(scan_redis, cell["redis_url"], markers)))
    if router:
        dsn = topo["router"]["database_url"]
        jobs.append(("router database", "database", None, partial(scan_database, dsn, markers)))
        if redis and topo["router"].get("redis_url"):
            jobs.append(("router redis", "redis", None, partial(scan_redis, topo["router"]["redis_url"], markers)))
    stores, breaches = [], []
    found_home: set[str] = set()
    for store, kind, region, job in jobs:
        hits, scanned = await job()
        entries = []
        for hit in hits:
            project_id, slot = owner[hit.marker]
            entry = {"marker": hit.marker, "slot": slot, "project_id": project_id, "where": hit.where}
            entries.append(entry)
            if region is not None and region == homes[project_id]:
                found_home.add(hit.marker)
            else:
                breaches.append({"store": store, **entry})
        stores.append({"store": store, "kind": kind, "region": region, "scanned": scanned, "hits": entries})
    checked = [p for p in plants if homes[p.project_id] in chosen]
    missing = [{"project_id": p.project_id, "region": homes[p.project_id], "slot": slot, "marker": marker}
               for p in checked for slot, marker in p.markers.items() if marker not in found_home]
    return {
        "plants": [{"project_id": p.project_id, "home": homes[p.project_id], "markers": len(p.markers)}
                   for p in plants],
        "stores": stores,
        "breaches": breaches,
        "control": {"checked": bool(checked), "missing": missing},
        "ok": not breaches and not missing,
    }


def project_results(plants: list[Plant], result: dict[str, Any]) -> list[dict[str, Any]]:
    """A scan's verdict per project whose home was scanned, as `canary_results` keeps it: the stores read with
    how many of the project's markers each held, each breach by slot and place, and the slots missing at home.
    Markers are replaced by `[marker]` wherever a place's name holds one (a Redis key named after an end user,
    say): a stored marker would be found at home by the next scan and prove nothing."""
    by_project: dict[str, list[Plant]] = {}
    for p in plants:
        by_project.setdefault(p.project_id, []).append(p)
    homes = {p["project_id"]: p["home"] for p in result["plants"]}
    scanned_regions = {s["region"] for s in result["stores"] if s["region"] is not None}
    markers = sorted({m for p in plants for m in p.markers.values()}, key=len, reverse=True)

    def hidden(text: str) -> str:
        for m in markers:
            text = text.replace(m, "[marker]")
        return text

    out = []
    for project_id, planted in by_project.items():
        home = homes[project_id]
        if home not in scanned_regions:
            continue
        mine = {m for p in planted for m in p.markers.values()}
        stores = [{"store": s["store"], "kind": s["kind"], "region": s["region"],
                   "hits": sum(1 for h in s["hits"] if h["project_id"] == project_id)} for s in result["stores"]]
        breaches = [{"store": b["store"], "slot": b["slot"], "where": hidden(b["where"])}
                    for b in result["breaches"] if b["project_id"] == project_id]
        missing = sorted({m["slot"] for m in result["control"]["missing"] if m["project_id"] == project_id})
        found = {h["marker"] for s in result["stores"] if s["region"] == home for h in s["hits"]} & mine
        dates = [p.planted_at for p in planted if p.planted_at]
        out.append({"project_id": project_id, "home": home, "ok": not breaches and not missing,
                    "markers": len(mine), "found_home": len(found), "missing_slots": missing, "stores": stores,
                    "breaches": breaches, "planted_at": max(dates) if dates else None})
    return out


async def record(topo: dict[str, Any], plants: list[Plant], result: dict[str, Any]) -> dict[str, str]:
    """Keep each project's result in its home cell (`canary_results`); what could not be kept, per region."""
    from datetime import datetime

    import asyncpg

    from common.ids import uuid7

    failed: dict[str, str] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in project_results(plants, result):
        rows.setdefault(r["home"], []).append(r)
    for region, results in sorted(rows.items()):
        try:
            conn = await _connect(topo["cells"][region]["database_url"])
        except (ResidencyError, KeyError) as exc:
            failed[region] = str(exc)
            continue
        try:
            for r in results:
                planted = datetime.fromisoformat(r["planted_at"].replace("Z", "+00:00")) if r["planted_at"] else None
                await conn.execute(
                    """INSERT INTO canary_results (id, project_id, planted_at, ok, markers, found_home, missing_slots,
                                                   stores, breaches)
                       SELECT $1, id, $3, $4, $5, $6, $7, $8, $9 FROM projects WHERE id = $2""",
                    uuid7(), uuid.UUID(r["project_id"]), planted, r["ok"], r["markers"], r["found_home"],
                    r["missing_slots"], r["stores"], r["breaches"])
        except (asyncpg.PostgresError, OSError) as exc:  # an old schema, a dropped connection: said, not raised
            failed[region] = f"{type(exc).__name__}: {exc}"
        finally:
            await conn.close()
    return failed


def cmd_scan(args: argparse.Namespace) -> int:
    """`relay residency canary scan`: 0 when nothing is out of place, 1 on a breach, 3 when home lacks markers."""
    topo = topology(args)
    plants = load_plants(_canaries_path(args, args.canaries))
    result = asyncio.run(scan(topo, plants, regions=args.region, router=not args.no_router,
                              redis=not args.no_redis))
    if not args.no_record:
        for region, error in asyncio.run(record(topo, plants, result)).items():
            print(f"relay residency: the result was not recorded in {region}: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        for store in result["stores"]:
            scanned = ", ".join(f"{v} {k}" for k, v in store["scanned"].items())
            print(f"{store['store']}: {len(store['hits'])} hits ({scanned})")
        for breach in result["breaches"]:
            print(f"BREACH: {breach['slot']} marker of project {breach['project_id']} in {breach['store']}: "
                  f"{breach['where']}")
        control = result["control"]
        if control["checked"]:
            print("control: every marker found at home" if not control["missing"] else
                  "CONTROL FAILED: not found at home: " + ", ".join(m["slot"] for m in control["missing"]))
        print("no breach" if not result["breaches"] else f"{len(result['breaches'])} BREACHES")
    if result["breaches"]:
        return 1
    return 3 if result["control"]["missing"] else 0
