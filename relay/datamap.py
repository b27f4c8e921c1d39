"""The data map compliance teams ask for, generated from the migrations: `python -m relay.datamap`.

It replays every cell and router migration's DDL (CREATE TABLE, ALTER TABLE
ADD/DROP/RENAME COLUMN and TYPE, RENAME TO, DROP TABLE) to list each table and
column as the schema now has them, then says where each lives and whether it
may hold personal data. The classification is the one hand-written part: an
explicit entry per column that holds anything but ids, times, counts and
states, and name rules for the rest. A new text or JSON column nobody has
classified is listed as "unreviewed" (assumed personal until someone looks).

`python -m relay.datamap` rewrites docs/data-map.md; `--check` exits 1 when
the file is out of date (tests/test_datamap.py runs it, and checks the parse
against a database the migrations really built).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELL_MIGRATIONS = ROOT / "cell" / "migrations"
ROUTER_MIGRATIONS = ROOT / "router" / "migrations"
OUTPUT = ROOT / "docs" / "data-map.md"

# -- Reading the migrations --------------------------------------------------------------------------------------


@dataclass
class Column:
    """A column as the migrations leave it."""

    name: str
    type: str
    added_in: str = ""
    """The migration that added it."""
    conditional: bool = False
    """Added by a `DO` block's `EXECUTE` (an extension's column, where the server offers it): a server without
    it builds the table without this column."""


@dataclass
class Table:
    """A table as the migrations leave it, and the migration that created it."""

    name: str
    created_in: str
    columns: list[Column] = field(default_factory=list)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


def statements(sql: str) -> list[str]:
    """The SQL's statements, comments removed, split on `;` outside quotes, dollar quotes and parentheses."""
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            i = sql.find("\n", i)
            i = n if i < 0 else i
            continue
        if sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            buf.append(" ")
            continue
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            buf.append(sql[i:end + 1])
            i = end + 1
            continue
        dollar = re.match(r"\$[A-Za-z_]*\$", sql[i:])
        if dollar:
            tag = dollar.group(0)
            end = sql.find(tag, i + len(tag))
            end = n if end < 0 else end + len(tag)
            buf.append(sql[i:end])
            i = end
            continue
        if ch == ";":
            text = "".join(buf).strip()
            if text:
                out.append(text)
            buf = []
        else:
            buf.append(ch)
        i += 1
    text = "".join(buf).strip()
    if text:
        out.append(text)
    return out


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses or quotes."""
    parts, depth, buf, quote = [], 0, [], ""
    for ch in text:
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    if "".join(buf).strip():
        parts.append("".join(buf).strip())
    return parts


_CONSTRAINT_WORDS = ("CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE", "LIKE")
_TYPE_END = re.compile(r"\s+(?:NOT\b|NULL\b|DEFAULT\b|PRIMARY\b|REFERENCES\b|UNIQUE\b|CHECK\b|GENERATED\b|"
                       r"CONSTRAINT\b|COLLATE\b)", re.IGNORECASE)
_NAME = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = rf"(?:{_NAME}\.)?({_NAME})"


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


def _column(definition: str) -> Column | None:
    """`name type [constraints]` → Column; None for a table constraint."""
    if definition.split(None, 1)[0].upper() in _CONSTRAINT_WORDS:
        return None
    m = re.match(rf"({_NAME})\s+(.*)$", definition, re.DOTALL)
    if m is None:
        return None
    rest = " ".join(m.group(2).split())
    cut = _TYPE_END.search(" " + rest)
    kind = (" " + rest)[:cut.start()].strip() if cut else rest
    generated = re.search(r"\bGENERATED\s+ALWAYS\s+AS\s*\(", rest, re.IGNORECASE)
    return Column(_unquote(m.group(1)), kind.lower() + (" (generated)" if generated else ""))


def _alter(table: Table, action: str, migration: str) -> None:
    """Apply one ALTER TABLE action (of `migration`) to the table."""
    words = action.split()
    upper = [w.upper() for w in words]
    if upper[:1] == ["ADD"]:
        rest = words[2:] if upper[1:2] == ["COLUMN"] else words[1:]
        if [w.upper() for w in rest[:3]] == ["IF", "NOT", "EXISTS"]:
            rest = rest[3:]
        if rest and rest[0].upper() not in _CONSTRAINT_WORDS:
            column = _column(" ".join(rest))
            if column is not None and table.column(column.name) is None:
                column.added_in = migration
                table.columns.append(column)
    elif upper[:1] == ["DROP"] and upper[1:2] != ["CONSTRAINT"]:
        rest = words[2:] if upper[1:2] == ["COLUMN"] else words[1:]
        if [w.upper() for w in rest[:2]] == ["IF", "EXISTS"]:
            rest = rest[2:]
        if rest:
            table.columns = [c for c in table.columns if c.name != _unquote(rest[0])]
    elif upper[:2] == ["RENAME", "COLUMN"] and len(words) >= 5:
        old = table.column(_unquote(words[2]))
        if old is not None:
            old.name = _unquote(words[4])
    elif upper[:1] == ["RENAME"] and upper[1:2] not in (["TO"], ["CONSTRAINT"]) and upper[2:3] == ["TO"]:
        old = table.column(_unquote(words[1]))
        if old is not None:
            old.name = _unquote(words[3])
    elif upper[:2] == ["ALTER", "COLUMN"] or upper[:1] == ["ALTER"]:
        rest = words[2:] if upper[1:2] == ["COLUMN"] else words[1:]
        kinds = [w.upper() for w in rest]
        at = next((i for i, w in enumerate(kinds) if w == "TYPE"), None)
        if rest and at is not None and (at == 1 or kinds[1:at] == ["SET", "DATA"]):
            col = table.column(_unquote(rest[0]))
            if col is not None:
                kind = " ".join(rest[at + 1:])
                cut = re.search(r"\s+(?:USING|COLLATE)\b", " " + kind, re.IGNORECASE)
                col.type = ((" " + kind)[:cut.start()] if cut else kind).strip().lower()


def read_schema(directory: Path) -> dict[str, Table]:
    """Every table the migrations in `directory` leave behind, by name. Columns a `DO` block adds with
    `EXECUTE 'ALTER TABLE … ADD COLUMN …'` (pgvector's, where the server has it) are read as `conditional`."""
    tables: dict[str, Table] = {}
    for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        for statement in statements(path.read_text()):
            if re.match(r"\s*DO\b", statement, re.IGNORECASE):
                for quoted in re.findall(r"EXECUTE\s+'((?:[^']|'')*)'", statement, re.IGNORECASE):
                    _apply(tables, quoted.replace("''", "'"), path.name, conditional=True)
                continue
            _apply(tables, statement, path.name)
    return tables


def _apply(tables: dict[str, Table], statement: str, migration: str, *, conditional: bool = False) -> None:
    """Apply one statement of `migration` (CREATE, ALTER or DROP TABLE; others change no table) to `tables`."""
    flat = " ".join(statement.split())
    m = re.match(rf"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_QUALIFIED}\s*\(",
                 flat, re.IGNORECASE)
    if m:
        body = statement[statement.index("(") + 1:statement.rindex(")")]
        name = _unquote(m.group(1))
        if name not in tables:
            table = Table(name, migration)
            table.columns = [c for c in map(_column, _split_top(body)) if c is not None]
            for column in table.columns:
                column.added_in = migration
            tables[name] = table
        return
    m = re.match(rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_QUALIFIED}\s+(.*)$", flat,
                 re.IGNORECASE | re.DOTALL)
    if m:
        name = _unquote(m.group(1))
        rename = re.match(rf"RENAME\s+TO\s+({_NAME})$", m.group(2), re.IGNORECASE)
        if rename and name in tables:
            table = tables.pop(name)
            table.name = _unquote(rename.group(1))
            tables[table.name] = table
        elif name in tables:
            before = {c.name for c in tables[name].columns}
            for action in _split_top(m.group(2)):
                _alter(tables[name], action, migration)
            for column in tables[name].columns:
                column.conditional = column.conditional or (conditional and column.name not in before)
        return
    m = re.match(r"DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(.*?)(?:\s+(?:CASCADE|RESTRICT))?$", flat, re.IGNORECASE)
    if m:
        for name in _split_top(m.group(1)):
            tables.pop(_unquote(name.split(".")[-1]), None)


def enum_types(directory: Path) -> set[str]:
    """Names of the enum types the migrations create: a column of one holds only its fixed labels."""
    found = set()
    for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        for statement in statements(path.read_text()):
            m = re.match(rf"CREATE\s+TYPE\s+{_QUALIFIED}\s+AS\s+ENUM\b", " ".join(statement.split()), re.IGNORECASE)
            if m:
                found.add(_unquote(m.group(1)))
    return found


# -- Classifying columns ---------------------------------------------------------------------------------------

PERSONAL, CONTENT, LINKED, SECRET, NONE, UNREVIEWED = (
    "personal", "end-user content", "pseudonymous", "secret", "no", "unreviewed")
LEGEND = {
    PERSONAL: "identifies or describes a person directly (email, name, device, IP-derived, avatar).",
    CONTENT: "free text or JSON an end user sent, or derived from it; may hold personal data of anyone.",
    LINKED: "an identifier that links rows to a person or a team member; personal data in combination.",
    SECRET: "credential material (hashes, sealed secrets): never personal, always guarded.",
    NONE: "configuration, ids of things, times, counts, states.",
    UNREVIEWED: "a text or JSON column nobody has classified yet: treated as personal until reviewed.",
}

# table.column → (class, note). Columns not listed fall to the name rules in `classify`.
CLASSES: dict[str, tuple[str, str]] = {
    # cell
    "projects.name": (NONE, "the customer's name for the project"),
    "projects.settings": (NONE, "project configuration"),
    "projects.secret": (SECRET, "per-project HMAC secret, plain: NULL once sealed (migration 0017)"),
    "projects.sealed_secret": (SECRET, "per-project HMAC secret, sealed with the cell's key ring"),
    "projects.identity_secret": (SECRET, "identity-verification secret (user_hash), sealed with the cell's key ring"),
    "api_keys.key_hash": (SECRET, "bcrypt hash of a key from before digests, until its next use"),
    "api_keys.key_digest": (SECRET, "HMAC-SHA256 of the key under the key pepper"),
    "api_keys.key_prefix": (NONE, "routing prefix, shown in listings"),
    "api_keys.name": (NONE, ""),
    "api_keys.scopes": (NONE, ""),
    "end_users.external_user_id": (PERSONAL, "the customer's id for the person"),
    "end_users.email": (PERSONAL, ""),
    "end_users.name": (PERSONAL, ""),
    "end_users.avatar_url": (PERSONAL, ""),
    "end_users.traits": (PERSONAL, "whatever the SDK sends about the person"),
    "sessions.device": (PERSONAL, "device details"),
    "sessions.app_version": (NONE, ""),
    "sessions.ip_hash": (LINKED, "keyed hash of the client IP; the IP itself is never stored"),
    "sessions.user_agent": (PERSONAL, ""),
    "interactions.content_text": (CONTENT, "the user's words, after privacy rules"),
    "interactions.content_json": (CONTENT, "title, description, steps, annotations …"),
    "interactions.tags": (CONTENT, "may come from ingest"),
    "interactions.linked_issue_id": (NONE, "id in the customer's tracker"),
    "interactions.linked_issue_url": (NONE, ""),
    "interactions.ai_summary": (CONTENT, "derived from the content"),
    "interactions.ai_labels": (CONTENT, "derived from the content"),
    "interactions.ai_duplicate_group_id": (NONE, ""),
    "interactions.privacy_scope": (NONE, "which privacy rules redacted how much; never the values"),
    "interactions.technical_context": (CONTENT, "URLs, environment; may carry personal data"),
    "interactions.search": (CONTENT, "full-text index of the content"),
    "media.url": (CONTENT, ""),
    "media.storage_key": (NONE, "object key under projects/{project_id}/media/"),
    "media.content_type": (NONE, ""),
    "media.sha256": (NONE, ""),
    "media.meta": (NONE, "which kinds of image metadata were removed; the digest of the bytes as sent"),
    "interaction_logs.console": (CONTENT, "console output of the user's browser"),
    "interaction_logs.network": (CONTENT, "network requests of the user's browser"),
    "interaction_logs.errors": (CONTENT, "errors and stack traces"),
    "replays.chunks": (NONE, "index of chunk objects (keys, counts, times)"),
    "feedback_items.title": (CONTENT, "end users suggest items"),
    "feedback_items.description": (CONTENT, ""),
    "feedback_items.category": (CONTENT, ""),
    "roadmap_items.title": (NONE, "written by the team"),
    "roadmap_items.description": (NONE, "written by the team"),
    "surveys.name": (NONE, ""),
    "surveys.definition": (NONE, ""),
    "surveys.targeting": (NONE, ""),
    "survey_responses.responses": (CONTENT, "the user's answers"),
    "conversations.subject": (CONTENT, ""),
    "messages.body": (CONTENT, "chat messages, both ways"),
    "messages.meta": (NONE, "redaction counts"),
    "audit_logs.actor_id": (LINKED, "team member id or key prefix"),
    "audit_logs.action": (NONE, ""),
    "audit_logs.target_type": (NONE, ""),
    "audit_logs.target_id": (NONE, ""),
    "audit_logs.meta": (NONE, "counts and settings; never user content"),
    "audit_logs.ip_address": (PERSONAL, "truncated (/24, /48) before it is stored"),
    "audit_logs.user_agent": (PERSONAL, ""),
    "integrations.config": (SECRET, "provider settings; tokens sealed (AES-GCM)"),
    "integration_links.external_id": (NONE, ""),
    "integration_links.internal_type": (NONE, ""),
    "integration_links.external_url": (NONE, ""),
    "privacy_rules.name": (NONE, ""),
    "privacy_rules.rule": (NONE, ""),
    "feature_flags.flag": (NONE, ""),
    "outbox.kind": (NONE, ""),
    "outbox.payload": (LINKED, "ids of the rows to work on, object keys to delete"),
    "outbox.last_error": (NONE, ""),
    "webhooks.url": (NONE, "the customer's endpoint"),
    "webhooks.events": (NONE, ""),
    "webhooks.secret": (SECRET, "sealed whsec_ signing secret"),
    "webhook_deliveries.event": (NONE, ""),
    "webhook_deliveries.payload": (CONTENT, "the event as delivered, content included"),
    "webhook_deliveries.status": (NONE, ""),
    "webhook_deliveries.last_error": (NONE, ""),
    "residency_reports.scope": (NONE, ""),
    "residency_reports.body": (NONE, "counts, table names, project ids and object keys; never content"),
    "residency_reports.prev_hash": (NONE, ""),
    "residency_reports.hash": (NONE, ""),
    "residency_reports.signature": (NONE, ""),
    "outbox.only_job": (NONE, "the one consumer an operator's retry re-runs"),
    "outbox.pending_jobs": (NONE, "consumers relayed but not yet finished"),
    "outbox.traceparent": (NONE, "W3C trace context of the writing request: trace and span ids only"),
    "dead_letters.job": (NONE, ""),
    "dead_letters.kind": (NONE, ""),
    "dead_letters.payload": (LINKED, "a copy of the outbox payload: ids and object keys"),
    "dead_letters.error": (CONTENT, "the failing job's error text, which may quote what it worked on"),
    "maintenance_runs.task": (NONE, ""),
    "maintenance_runs.counts": (NONE, "how many rows a run repaired or deleted"),
    "enrichment_signatures.group_id": (NONE, "the duplicate group"),
    "enrichment_signatures.method": (NONE, ""),
    "enrichment_signatures.embedding_model": (NONE, ""),
    "enrichment_signatures.terms": (CONTENT, "derived from the user's words and logs"),
    "enrichment_signatures.log_terms": (CONTENT, "derived from the user's logs"),
    "enrichment_signatures.keys": (CONTENT, "derived from the user's words and logs"),
    "enrichment_signatures.embedding": (CONTENT, "a vector derived from the user's words"),
    "interaction_vectors.model": (NONE, "the embedding model's name"),
    "interaction_vectors.unit": (CONTENT, "a vector derived from the user's words"),
    "interaction_vectors.embedding": (CONTENT, "a vector derived from the user's words (pgvector servers)"),
    "interactions.ai_method": (NONE, "which method wrote the ai_* fields"),
    "integration_issue_requests.external_id": (NONE, "the provider's issue id"),
    "integration_issue_requests.external_url": (NONE, "the provider's issue URL"),
    "integration_issue_requests.last_error": (NONE, "the provider's refusal, without the issue body"),
    "integration_links.external_state": (NONE, "open or closed"),
    "moved_projects.region": (NONE, "where a project that left this cell lives now"),
    "webhook_deliveries.event_key": (NONE, "the outbox event a delivery belongs to"),
    "notifications_sent.event": (NONE, "the closed issue a notification was about"),
    "notifications_sent.channel": (NONE, "email or slack"),
    "notifications_sent.recipient": (LINKED, "a keyed hash of the address, never the address"),
    "replays.failure_reason": (NONE, "why processing failed: chunk numbers and checks, never events"),
    "move_changes.table_name": (NONE, ""),
    "move_changes.pk": (LINKED, "the key of a row changed during a move, never its content"),
    "moves.from_region": (NONE, ""),
    "moves.to_region": (NONE, ""),
    "moves.state": (NONE, ""),
    "moves.step": (NONE, ""),
    "moves.progress": (NONE, "per-table counts and cursors (ids)"),
    "moves.last_error": (NONE, "what stopped a step, never row content"),
    "moves.receipt": (NONE, "the source cell's signed deletion receipt: counts and hashes"),
    "residency_reports.public_key": (NONE, ""),
    "canary_results.missing_slots": (NONE, "which kinds of planted marker a scan did not find at home"),
    "canary_results.stores": (NONE, "the stores a canary scan read and how many markers each held"),
    "canary_results.breaches": (NONE, "where a marker was found outside home: store, table.column, row id or "
                                      "object key; never a marker"),
    "projects.erasure": (NONE, "an erasure's counts while it runs (rows per table, objects, bytes)"),
    "replays.privacy_scope": (NONE, "which privacy rules redacted how much from the events; never the values"),
    "sessions.privacy_scope": (NONE, "which privacy rules redacted how much from the user agent and device"),
    "end_users.privacy_scope": (NONE, "which privacy rules redacted how much from the traits"),
    "project_exports.requested_by": (LINKED, "the owner who asked: a team member's id"),
    "project_exports.storage_key": (NONE, "object key of the archive under projects/{project_id}/exports/"),
    "project_exports.manifest_storage_key": (NONE, "object key of the signed manifest"),
    "project_exports.sha256": (NONE, ""),
    "project_exports.manifest_hash": (NONE, ""),
    "project_exports.signature": (NONE, ""),
    "project_exports.public_key": (NONE, ""),
    "project_exports.counts": (NONE, "rows per table, objects and bytes"),
    "project_exports.failure_reason": (NONE, "what failed (an error kind), never data"),
    # router
    "admin_users.email": (PERSONAL, "a team member's login"),
    "admin_users.password_hash": (SECRET, ""),
    "admin_users.name": (PERSONAL, "a team member"),
    "admin_users.avatar_url": (PERSONAL, "a team member"),
    "admin_sessions.token_hash": (SECRET, "SHA-256 of the session token"),
    "project_directory.name": (NONE, "the project's name"),
    "project_directory.region": (NONE, ""),
    "key_directory.key_prefix": (NONE, "routing prefix; never the key itself"),
    "key_directory.key_digest": (SECRET, "HMAC-SHA256 of the key under the key pepper: checked at the edge"),
    "key_directory.scopes": (NONE, "the key's scopes, enforced at the edge"),
    "key_directory.region": (NONE, ""),
    "outbox@router.payload": (NONE, "provisioning steps: ids, regions, key prefixes"),
    "outbox@router.kind": (NONE, ""),
    "outbox@router.last_error": (NONE, ""),
    "audit_logs@router.actor_user_id": (LINKED, "the acting team member's id"),
    "audit_logs@router.actor_key_prefix": (LINKED, "the acting key's prefix"),
    "audit_logs@router.target_id": (LINKED, "the id of what was changed (project, key, account, session)"),
    "audit_logs@router.meta": (NONE, "ids, regions, roles, counts; never a name, address or secret"),
    "password_resets.token_hash": (SECRET, "SHA-256 of the one-time reset token"),
    "project_deletions.progress": (NONE, "how many erase calls it took"),
    "project_deletions.receipt": (NONE, "the cell's signed deletion receipt: ids, counts and hashes"),
}
_STATE_NAMES = frozenset({"status", "state", "role", "kind", "type", "region", "environment", "source",
                          "severity", "direction", "visibility", "provider", "actor_type", "scope"})
_LINKING_IDS = frozenset({"user_id", "session_id", "assignee_id", "created_by", "author_id"})
_PLAIN_TYPES = re.compile(r"^(uuid|integer|int|bigint|smallint|bigserial|serial|boolean|bool|float|double precision|"
                          r"real|numeric.*|timestamptz|timestamp.*|date|interval|char\(64\))$")


def classify(store: str, table: str, column: Column, enums: frozenset[str] = frozenset()) -> tuple[str, str]:
    """The column's class and a note: the explicit entry, else the name and type rules."""
    found = CLASSES.get(f"{table}@{store}.{column.name}") or CLASSES.get(f"{table}.{column.name}")
    if found is not None:
        return found
    if column.name in _LINKING_IDS:
        return LINKED, ""
    kind = column.type.removesuffix(" (generated)")
    if _PLAIN_TYPES.match(kind) or kind.removesuffix("[]") in enums or column.name in _STATE_NAMES:
        return NONE, ""
    return UNREVIEWED, ""


# -- Writing the map -------------------------------------------------------------------------------------------

STORES = (
    ("cell database (Postgres)", "one per region ({regions}); a project's rows only in its own region",
     "every table under [Cell database](#cell-database)"),
    ("cell object storage", "one bucket or directory per region, keys `projects/{{project_id}}/…`",
     "media bytes (`media/{{media_id}}`, images without their EXIF/XMP/IPTC), replay chunks "
     "(`replays/{{replay_id}}/chunks/{{index}}.json.gz`, gzip rrweb events, scrubbed by the privacy rules): "
     "end-user content; project exports (`exports/{{export_id}}/`: the whole project as a zip, and its signed "
     "manifest)"),
    ("cell Redis", "one per region", "job queue (ids only), caches; nothing durable"),
    ("router control database (Postgres)", "global",
     "every table under [Router control database](#router-control-database): team accounts, routing; "
     "no end-user data"),
    ("router Redis", "global", "routing cache, pub/sub, rate-limit counters; no end-user data"),
)

_HEADER = """# Relay data map

<!-- Generated by `python -m relay.datamap` from cell/migrations and router/migrations; do not edit by hand.
     tests/test_datamap.py fails when this file is out of date. Classifications live in relay/datamap.py. -->

Every table and column Relay stores, where it lives, and whether it may hold personal data.

## Where data lives

| store | where | holds |
| --- | --- | --- |
{stores}

`relay residency audit --region R` proves from the stores that every row and object of a cell belongs to a
project homed there; `relay residency canary scan` proves planted end-user data reaches no other region and not
the router.

## Classes

{legend}
"""


def render() -> str:
    """The whole data map, from the migrations as they are now."""
    from common.settings import DEFAULT_REGIONS

    legend = "\n".join(f"- **{name}**: {text}" for name, text in LEGEND.items())
    stores = "\n".join(f"| {store} | {where} | {holds} |" for store, where, holds in STORES)
    header = _HEADER.format(stores=stores, legend=legend)
    parts = [header.format(regions=", ".join(DEFAULT_REGIONS))]
    counts: dict[str, int] = {}
    for title, store, directory, where in (
            ("Cell database", "cell", CELL_MIGRATIONS, "each region's cell database: the project's region only"),
            ("Router control database", "router", ROUTER_MIGRATIONS, "the router's control database: global")):
        tables = read_schema(directory)
        enums = frozenset(enum_types(directory))
        parts.append(f"## {title}\n\nLives in {where}. {len(tables)} tables.\n")
        for name in sorted(tables):
            table = tables[name]
            marks = []
            for column in table.columns:
                cls, note = classify(store, name, column, enums)
                counts[cls] = counts.get(cls, 0) + 1
                marks.append(f"| `{column.name}` | {column.type} | {cls} | {note} |")
            holds = sorted({classify(store, name, c, enums)[0] for c in table.columns} - {NONE})
            summary = ", ".join(holds) if holds else "no personal data"
            parts.append(f"### {name}\n\nCreated in `{table.created_in}`. May hold: {summary}.\n\n"
                         "| column | type | personal data | note |\n| --- | --- | --- | --- |\n"
                         + "\n".join(marks) + "\n")
    parts.append("## Totals\n\n" + "\n".join(f"- {name}: {counts.get(name, 0)} columns" for name in LEGEND) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write docs/data-map.md, or with `--check` say whether it is current (exit 1 when not)."""
    parser = argparse.ArgumentParser(prog="python -m relay.datamap", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date; write nothing")
    parser.add_argument("--output", default=str(OUTPUT), help="where the map goes (default docs/data-map.md)")
    args = parser.parse_args(argv)
    text = render()
    path = Path(args.output)
    current = path.read_text() if path.exists() else ""
    if args.check:
        if current != text:
            print(f"{path} is out of date: run `python -m relay.datamap`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
