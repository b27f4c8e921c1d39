"""Privacy rules: management (admin writes, audited) and the SDK's ingest config.

Rules take effect on the next ingest: a change made here drops this process's
cached copy at once, other processes reload within `scrub.STALE_SECONDS`.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, delete, get, patch, post

from cell import audit
from cell.auth import ADMIN, READ, require
from cell.context import caller, ctx
from cell.flags.queries import flags_of
from cell.paging import Page, decode_cursor, limit_of, newest_first
from cell.privacy import queries, scrub
from cell.privacy.types import IngestConfig, PrivacyConfig, PrivacyRule, RuleIn, RulePatch, RuleSpec
from common.problems import Problem


def _out(row: Any) -> PrivacyRule:
    return msgspec.convert(dict(row), PrivacyRule)


def _summary(rule: RuleSpec | dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a rule: its kind, never a custom regex (it may spell out a secret)."""
    spec = msgspec.structs.asdict(rule) if isinstance(rule, RuleSpec) else rule
    pattern = spec.get("pattern")
    kind = "regex" if isinstance(pattern, str) and pattern.startswith(scrub.REGEX_PREFIX) else pattern
    return {"type": spec.get("type"), "pattern": kind, "scope": spec.get("scope")}


@get("/v1/projects/{project_id:uuid}/privacy-rules")
async def list_rules(request: Request[Any, Any, Any], project_id: uuid.UUID, enabled: bool | None = None,
                     cursor: str | None = None, limit: int | None = None) -> Page[PrivacyRule]:
    """The project's privacy rules, newest first."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    rows = await queries.page(ctx(request).pool, project_id, enabled, decode_cursor(cursor) if cursor else None, size)
    return newest_first([_out(r) for r in rows], size)


@get("/v1/projects/{project_id:uuid}/privacy-rules/{rule_id:uuid}")
async def get_rule(request: Request[Any, Any, Any], project_id: uuid.UUID, rule_id: uuid.UUID) -> PrivacyRule:
    """One privacy rule."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get(ctx(request).pool, project_id, rule_id)
    if row is None:
        raise Problem(404, "no such privacy rule")
    return _out(row)


@post("/v1/projects/{project_id:uuid}/privacy-rules", status_code=201)
async def create_rule(request: Request[Any, Any, Any], project_id: uuid.UUID, data: RuleIn) -> PrivacyRule:
    """Add a rule; it applies from the next ingest on."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.insert(conn, project_id, data.name, data.enabled, msgspec.structs.asdict(data.rule))
        await audit.record(conn, principal, "privacy_rule.created", "privacy_rule", row["id"],
                           {"name": data.name, "enabled": data.enabled, **_summary(data.rule)})
    scrub.invalidate(project_id)
    return _out(row)


@patch("/v1/projects/{project_id:uuid}/privacy-rules/{rule_id:uuid}")
async def update_rule(request: Request[Any, Any, Any], project_id: uuid.UUID, rule_id: uuid.UUID,
                      data: RulePatch) -> PrivacyRule:
    """Rename, enable or disable a rule, or replace what it does."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    if not changes:
        raise Problem(422, "nothing to change: send name, enabled or rule")
    if isinstance(data.rule, RuleSpec):
        changes["rule"] = msgspec.structs.asdict(data.rule)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.update(conn, project_id, rule_id, changes)
        if row is None:
            raise Problem(404, "no such privacy rule")
        meta: dict[str, Any] = {"fields": sorted(changes), "name": row["name"], "enabled": row["enabled"]}
        await audit.record(conn, principal, "privacy_rule.updated", "privacy_rule", rule_id,
                           meta | _summary(row["rule"]))
    scrub.invalidate(project_id)
    return _out(row)


@delete("/v1/projects/{project_id:uuid}/privacy-rules/{rule_id:uuid}", status_code=204)
async def delete_rule(request: Request[Any, Any, Any], project_id: uuid.UUID, rule_id: uuid.UUID) -> None:
    """Remove a rule; data stored before keeps its redactions."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.delete(conn, project_id, rule_id)
        if row is None:
            raise Problem(404, "no such privacy rule")
        await audit.record(conn, principal, "privacy_rule.deleted", "privacy_rule", rule_id,
                           {"name": row["name"], **_summary(row["rule"])})
    scrub.invalidate(project_id)


@get("/v1/ingest/config")
async def ingest_config(request: Request[Any, Any, Any]) -> IngestConfig:
    """What the SDK needs at start: selectors to mask on the client, and the project's flags."""
    principal = require(await caller(request), ingest=True)
    pool = ctx(request).pool
    rules = await scrub.rules_for(pool, principal.project_id)
    return IngestConfig(PrivacyConfig(list(rules.selectors)), await flags_of(pool, principal.project_id))


ROUTES = [list_rules, get_rule, create_rule, update_rule, delete_rule, ingest_config]
