"""The settings page of a project: keys, privacy rules with a live preview, webhooks with their deliveries,
the SDK's identity secret and allowed origins, retention — each through the API's own handlers, so the same
roles apply (admin for changes).

API keys are listed here (the cell holds their rows) but made and revoked by the router, which owns the
key directory: those two forms post to `/app/projects/{id}/keys…`, which the router answers itself
(router/dashboard/keys.py). Members live in the router too (its "Members" page).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template

from cell.auth import ADMIN, require
from cell.dashboard.desk import Desk, desk, form_of, page
from cell.integrations import routes as integrations
from cell.keys import routes as keys
from cell.privacy import routes as privacy
from cell.privacy import scrub
from cell.privacy.scrub import SCOPES
from cell.privacy.types import RuleIn
from cell.projects import routes as projects
from cell.webhooks import routes as webhooks
from cell.webhooks.types import EVENTS, WebhookIn
from common.problems import Problem

RECENT_DELIVERIES = 5
PREVIEW_SAMPLE = "Reach me at jane.doe@example.com or +1 415 555 0100; card 4242 4242 4242 4242."
PREVIEW_MAX = 2000


def _message(exc: Exception) -> str:
    return str(exc).split(" - at ")[0]


async def _context(request: Request[Any, Any, Any], seen: Desk, project_id: uuid.UUID, **more: Any) -> dict[str, Any]:
    rules = await privacy.list_rules.fn(request, project_id, enabled=None, cursor=None, limit=200)
    hooks = await webhooks.list_webhooks.fn(request, project_id, cursor=None, limit=50)
    deliveries = {h.id: (await webhooks.list_deliveries.fn(request, project_id, h.id, cursor=None,
                                                           limit=RECENT_DELIVERIES)).data for h in hooks.data}
    listed = await keys.list_keys.fn(request, project_id) if seen.is_admin else None
    current = await projects.get_settings.fn(request, project_id)
    trackers = await integrations.list_integrations.fn(request, project_id)
    return seen.context("Settings", "settings", rules=rules.data, hooks=hooks.data, deliveries=deliveries,
                        integrations=trackers.data,
                        keys=listed.data if listed else None, settings=current, scopes=SCOPES, events=EVENTS,
                        sample=PREVIEW_SAMPLE, errors=[], **more)


async def _refused(request: Request[Any, Any, Any], seen: Desk, project_id: uuid.UUID, form: str, why: str,
                   status: int) -> Template:
    """The settings page again, with why one of its forms was refused (nothing was changed)."""
    context = await _context(request, seen, project_id)
    context["errors"] = [f"{form}: {why}"]
    return page("settings.html", context, status)


@get("/app/projects/{project_id:uuid}/settings", include_in_schema=False)
async def settings_page(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Template:
    """Everything a project's admins configure, on one page."""
    seen = await desk(request, project_id)
    return page("settings.html", await _context(request, seen, project_id))


@get("/app/projects/{project_id:uuid}/settings/privacy-preview", request_class=HTMXRequest,
     include_in_schema=False)
async def privacy_preview(request: HTMXRequest, project_id: uuid.UUID, name: str = "preview", pattern: str = "",
                          sample: str = "") -> Template:
    """What a rule being written would redact in a sample text, with the very scrubber ingest runs."""
    seen = await desk(request, project_id)
    result, error = None, None
    try:
        spec = msgspec.convert({"name": name or "preview", "rule": {"type": "pattern", "pattern": pattern}}, RuleIn)
        rules = scrub.compile_rules([{"id": "preview", "name": spec.name, "enabled": True,
                                      "rule": msgspec.structs.asdict(spec.rule)}])
        result = scrub.scrub_text(rules, sample[:PREVIEW_MAX], "content")
    except (ValueError, msgspec.ValidationError) as exc:
        error = _message(exc)
    template = "privacy_preview.html" if request.htmx else "privacy_preview_page.html"
    return page(template, seen.context("Preview", "settings", result=result, error=error))


@post("/app/projects/{project_id:uuid}/settings/privacy-rules", include_in_schema=False)
async def add_rule(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Any:
    """Add a pattern rule with the API's create (admin)."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=ADMIN)
    body = {"name": _one(fields, "name"), "rule": {"type": "pattern", "pattern": _one(fields, "pattern"),
                                                      "scope": fields.get("scope") or None}}
    try:
        data = msgspec.convert(body, RuleIn)
    except (ValueError, msgspec.ValidationError) as exc:
        return await _refused(request, seen, project_id, "Privacy rule", _message(exc), 422)
    await privacy.create_rule.fn(request, project_id, data)
    return Redirect(f"/app/projects/{project_id}/settings#privacy", status_code=303)


@post("/app/projects/{project_id:uuid}/settings/privacy-rules/{rule_id:uuid}/delete", include_in_schema=False)
async def delete_rule(request: Request[Any, Any, Any], project_id: uuid.UUID, rule_id: uuid.UUID) -> Redirect:
    """Remove a rule with the API's delete (admin)."""
    seen = await desk(request, project_id)
    await form_of(request, seen)
    await privacy.delete_rule.fn(request, project_id, rule_id)
    return Redirect(f"/app/projects/{project_id}/settings#privacy", status_code=303)


@post("/app/projects/{project_id:uuid}/settings/webhooks", include_in_schema=False)
async def add_webhook(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Template:
    """Register a webhook with the API's create (admin); its signing secret is shown this once."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=ADMIN)
    try:
        data = msgspec.convert({"url": _one(fields, "url"), "events": fields.get("events", [])}, WebhookIn)
        made = await webhooks.create_webhook.fn(request, project_id, data)
    except (ValueError, msgspec.ValidationError) as exc:
        return await _refused(request, seen, project_id, "Webhook", _message(exc), 422)
    except Problem as problem:
        return await _refused(request, seen, project_id, "Webhook", problem.detail or problem.title, problem.status)
    return page("settings.html", await _context(request, seen, project_id, new_webhook=made), 201)


@post("/app/projects/{project_id:uuid}/settings/webhooks/{webhook_id:uuid}/delete", include_in_schema=False)
async def delete_webhook(request: Request[Any, Any, Any], project_id: uuid.UUID, webhook_id: uuid.UUID) -> Redirect:
    """Remove a webhook with the API's delete (admin)."""
    seen = await desk(request, project_id)
    await form_of(request, seen)
    await webhooks.delete_webhook.fn(request, project_id, webhook_id)
    return Redirect(f"/app/projects/{project_id}/settings#webhooks", status_code=303)


@post("/app/projects/{project_id:uuid}/settings/retention", include_in_schema=False)
async def set_retention(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Any:
    """Keep data for N days, or forever (empty), with the API's settings PATCH (admin)."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=ADMIN)
    raw = _one(fields, "retention_days").strip()
    try:
        data = msgspec.convert({"retention_days": int(raw) if raw else None}, projects.SettingsPatch)
    except (ValueError, msgspec.ValidationError) as exc:
        return await _refused(request, seen, project_id, "Retention", _message(exc), 422)
    await projects.update_settings.fn(request, project_id, data)
    return Redirect(f"/app/projects/{project_id}/settings#retention", status_code=303)


@post("/app/projects/{project_id:uuid}/settings/identity-secret", include_in_schema=False)
async def identity_secret(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Template:
    """Create (or replace) the identity secret with the API's rotate (admin); the `ris_` secret is shown once."""
    seen = await desk(request, project_id)
    await form_of(request, seen)
    require(seen.principal, level=ADMIN)
    made = await projects.rotate_identity_secret.fn(request, project_id)
    return page("settings.html", await _context(request, seen, project_id, new_identity_secret=made.secret), 201)


@post("/app/projects/{project_id:uuid}/settings/origins", include_in_schema=False)
async def set_origins(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Any:
    """The origins whose pages may call ingest, one a line (none: every origin), with the settings PATCH (admin)."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=ADMIN)
    lines = [line.strip() for line in _one(fields, "allowed_origins").splitlines() if line.strip()]
    try:
        data = msgspec.convert({"allowed_origins": lines}, projects.SettingsPatch)
        await projects.update_settings.fn(request, project_id, data)
    except msgspec.ValidationError as exc:
        return await _refused(request, seen, project_id, "Allowed origins", _message(exc), 422)
    except Problem as problem:
        if problem.status != 422:
            raise
        return await _refused(request, seen, project_id, "Allowed origins", problem.detail or problem.title, 422)
    return Redirect(f"/app/projects/{project_id}/settings#sdk", status_code=303)


def _one(fields: dict[str, list[str]], name: str) -> str:
    return (fields.get(name) or [""])[0]


ROUTES = [settings_page, privacy_preview, add_rule, delete_rule, add_webhook, delete_webhook, identity_secret,
          set_origins, set_retention]
