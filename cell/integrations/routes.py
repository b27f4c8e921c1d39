"""Integration endpoints: configure Linear, Jira, GitHub, Slack and email per project.

Reads are open to viewers (secrets are masked); changes need admin, as the
contract says of integrations. Every change is audited without a secret in it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, put

from cell import audit, netguard
from cell.auth import ADMIN, READ, require
from cell.context import caller, ctx
from cell.integrations import hooks, issues, queries
from cell.integrations.types import (
    CONFIG_TYPES,
    EmailConfig,
    Integration,
    IntegrationIn,
    IntegrationPatch,
    ProviderConfig,
    kept,
    masked,
    seal,
)
from cell.paging import Page
from cell.settings import CellSettings
from common.ids import uuid7
from common.problems import FieldError, Problem, from_validation

_MISSING = re.compile(r"missing required field `([^`]+)`")
_PATH = "/v1/projects/{project_id:uuid}/integrations/{provider:str}"


def _config_type(provider: str) -> type[ProviderConfig]:
    cls = CONFIG_TYPES.get(provider)
    if cls is None:
        raise Problem(404, "no such integration provider")
    return cls


def _invalid(message: str) -> Problem:
    """A 422 whose pointers point into `config` of the request body."""
    problem = from_validation(message)
    missing = _MISSING.search(message)  # msgspec names a missing field in the text, not in the path
    suffix = "/" + missing.group(1) if missing else ""
    problem.errors = [FieldError("/config" + e.pointer + suffix, e.message) for e in problem.errors or []]
    return problem


def _parse(cls: type[ProviderConfig], config: dict[str, Any]) -> ProviderConfig:
    try:
        return msgspec.convert(config, cls)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from exc


async def _vet(config: ProviderConfig, settings: CellSettings) -> None:
    """Refuse destinations the workers may not call (SSRF guard); provider defaults are trusted as they are."""
    policy = netguard.Policy.of(settings)
    cls = type(config)
    defaults = {f.name: f.default for f in msgspec.structs.fields(cls)}
    field = ""
    try:
        for name in cls.URLS:
            value = getattr(config, name)
            if kept(value) or value == defaults.get(name):
                continue
            field = name
            await netguard.check_url(value, policy)
        if isinstance(config, EmailConfig):
            field = "host"
            await netguard.check_host(config.host.strip("[]"), config.port, policy)
    except netguard.Refused as exc:
        raise Problem(422, "destination refused", errors=[FieldError(f"/config/{field}", str(exc))]) from exc


def _out(row: Any, settings: CellSettings, project_id: uuid.UUID) -> Integration:
    fields = dict(row)
    fields["config"] = masked(settings.secret_key, project_id, row["provider"], row["config"])
    return msgspec.convert(fields, Integration)


@put(_PATH, status_code=200)
async def put_integration(request: Request[Any, Any, Any], project_id: uuid.UUID, provider: str,
                          data: IntegrationIn) -> Response[Integration]:
    """Create (201) or replace (200) the provider's config; secrets sealed, omitted or masked ones kept."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    config = _parse(_config_type(provider), data.config)
    context = ctx(request)
    await _vet(config, context.settings)
    enabled = None if isinstance(data.enabled, msgspec.UnsetType) else data.enabled
    for _ in range(2):  # a create that loses a race with another create becomes a replace
        async with context.pool.acquire() as conn, conn.transaction():
            existing = await queries.get(conn, project_id, provider, lock=True)
            try:
                stored, changed = seal(context.settings.secret_key, project_id, provider, config,
                                       existing["config"] if existing is not None else None)
            except ValueError as exc:
                raise _invalid(str(exc)) from exc
            if existing is None:
                row = await queries.insert(conn, uuid7(), project_id, provider,
                                           True if enabled is None else enabled, stored)
                if row is None:
                    continue
                action, status = "integration.created", 201
            else:
                row = await queries.replace(conn, project_id, provider, enabled, stored)
                assert row is not None  # locked above
                action, status = "integration.updated", 200
            await audit.record(conn, principal, action, "integration", row["id"], {
                "provider": provider, "fields": sorted(data.config), "secrets_changed": changed,
                "enabled": row["enabled"]})
            return Response(_out(row, context.settings, project_id), status_code=status)
    raise Problem(409, "the integration changed concurrently; retry")


@get("/v1/projects/{project_id:uuid}/integrations")
async def list_integrations(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Page[Integration]:
    """Every configured integration of the project, secrets masked."""
    require(await caller(request, project_id), project_id, level=READ)
    context = ctx(request)
    rows = await queries.list_all(context.pool, project_id)
    return Page([_out(r, context.settings, project_id) for r in rows], None)


@get(_PATH)
async def get_integration(request: Request[Any, Any, Any], project_id: uuid.UUID, provider: str) -> Integration:
    """One provider's config, secrets masked to their last 4 characters."""
    require(await caller(request, project_id), project_id, level=READ)
    _config_type(provider)
    context = ctx(request)
    row = await queries.get(context.pool, project_id, provider)
    if row is None:
        raise Problem(404, "no such integration")
    return _out(row, context.settings, project_id)


@patch(_PATH)
async def patch_integration(request: Request[Any, Any, Any], project_id: uuid.UUID, provider: str,
                            data: IntegrationPatch) -> Integration:
    """Switch an integration on or off; its config stays as it is."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    _config_type(provider)
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        row = await queries.set_enabled(conn, project_id, provider, data.enabled)
        if row is None:
            raise Problem(404, "no such integration")
        await audit.record(conn, principal, "integration.updated", "integration", row["id"],
                           {"provider": provider, "fields": ["enabled"], "enabled": data.enabled})
    return _out(row, context.settings, project_id)


@delete(_PATH, status_code=204)
async def delete_integration(request: Request[Any, Any, Any], project_id: uuid.UUID, provider: str) -> None:
    """Remove the integration and its sealed secrets; links to issues it created stay as history."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    _config_type(provider)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row_id = await queries.remove(conn, project_id, provider)
        if row_id is None:
            raise Problem(404, "no such integration")
        await audit.record(conn, principal, "integration.deleted", "integration", row_id, {"provider": provider})


ROUTES = [put_integration, list_integrations, get_integration, patch_integration, delete_integration,
          *issues.ROUTES, *hooks.ROUTES]
