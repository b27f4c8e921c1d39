"""The pages of one project (`/app/projects/{id}/…`), rendered in the project's own region.

The router forwards a signed-in user's page requests here like management calls (router/proxy.py
`Proxy.page`), with the user, their role and the session's CSRF token in the signed actor. Each page calls
the JSON API's own handlers (listing, reading, triage) so it shows exactly what the API would, with the
same role checks, and runs a fixed number of queries whatever the number of rows: templates only format
what the handlers returned. Every form carries the CSRF token and every unsafe request is checked
against it here again, after the router did.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Stream, Template

from cell.audit import routes as audit
from cell.auth import WRITE, require
from cell.context import ctx
from cell.dashboard import residency as residency_pages
from cell.dashboard import settings as settings_pages
from cell.dashboard import workspace
from cell.dashboard.desk import Desk, choice, desk, form_of, page
from cell.integrations import issues
from cell.integrations import routes as integrations
from cell.interactions import duplicates, queries
from cell.interactions import routes as interactions
from cell.interactions.types import InteractionPatch, InteractionType, Severity, Status
from cell.media import routes as media
from cell.replays import routes as replays
from common.problems import Problem
from common.web import SECURITY_HEADERS, page_problem_handler, template_config

TEMPLATES = template_config(Path(__file__).parent / "templates")

STATUSES: tuple[str, ...] = get_args(Status)
TYPES: tuple[str, ...] = get_args(InteractionType)
SEVERITIES: tuple[str, ...] = get_args(Severity)
PAGE_SIZE = 50
HEADLINE_WORDS = 12
SUGGESTIONS = 5
"""How many `similar` suggestions the interaction page offers to merge."""
ISSUE_PROVIDERS = ("linear", "jira", "github")


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One inbox row as the template prints it: plain strings, read as attributes (a dict's keys cost Jinja a
    failed attribute lookup each, and a UUID a conversion per use: together half the page's rendering)."""

    href: str
    id: str
    headline: str
    summary: str | None
    tags: list[str]
    type: str
    status: str
    status_label: str
    severity: str | None
    at_iso: str
    at: str


def headline(content: dict[str, Any], limit: int = HEADLINE_WORDS) -> str:
    """The link text of an interaction: its title, else the first words of what the user wrote."""
    title = content.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    words = (queries.content_text(content) or "").split()
    if not words:
        return "(no text)"
    return " ".join(words[:limit]) + (" …" if len(words) > limit else "")


def log_table(entries: list[dict[str, Any]] | None) -> tuple[list[str], list[list[str]]]:
    """Log entries as a table: the columns (keys in order of first appearance) and each row's cells as text."""
    columns: list[str] = []
    for entry in entries or []:
        for key in entry:
            if key not in columns:
                columns.append(key)
    rows = [[_cell(entry.get(c)) for c in columns] for entry in entries or []]
    return columns, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


@get("/app/projects/{project_id:uuid}/", request_class=HTMXRequest, include_in_schema=False)
async def inbox(
    request: HTMXRequest,
    project_id: uuid.UUID,
    type: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    tag: str | None = None,
    assignee_id: str | None = None,
    duplicate_group: str | None = None,
    q: str | None = None,
    cursor: str | None = None,
) -> Template:
    """Every interaction of the project, newest first, filtered and searched like `GET interactions`."""
    seen = await desk(request, project_id)
    assignee = None
    if assignee_id:
        try:
            assignee = uuid.UUID(assignee_id)
        except ValueError:
            raise Problem(400, "assignee_id is not a UUID") from None
    search = (q or "").strip()[:500] or None
    filters = {"type": type or "", "status": status or "", "severity": severity or "", "tag": tag or "",
               "assignee_id": assignee_id or "", "duplicate_group": duplicate_group or "", "q": search or ""}
    listing = interactions.list_interactions.fn(
        request, project_id, type=choice(type, InteractionType, "type"), status=choice(status, Status, "status"),
        severity=choice(severity, Severity, "severity"), tag=tag or None, assignee_id=assignee, session_id=None,
        user_id=None, duplicate_group=duplicate_group or None, q=search, created_after=None, created_before=None,
        cursor=cursor or None, limit=PAGE_SIZE)
    partial = bool(request.htmx and request.htmx.target == "inbox-results")  # htmx swaps the results only
    # The counts are read with the page, beside the list on a second connection: exact up to the cap as of
    # this request, whichever process or worker changed a status (index-only, at most cap entries a status).
    # The results alone (htmx) do not show them.
    counts: dict[str, int] = {}
    if partial:
        found = await listing
    else:
        found, counts = await asyncio.gather(listing, queries.status_counts(ctx(request).pool, project_id))
    active = {k: v for k, v in filters.items() if v}
    # Rows as plain strings: the template only substitutes them (a macro call per cell costs more than the query).
    base = f"/app/projects/{project_id}/interactions/"
    rows = [InboxRow(href=base + str(i.id), id=str(i.id), headline=headline(i.content), summary=i.ai_summary,
                     tags=i.tags, type=i.type, status=i.status, status_label=i.status.replace("_", " "),
                     severity=i.severity, at_iso=i.created_at.isoformat(), at=i.created_at.strftime("%Y-%m-%d %H:%M"))
            for i in found.data]
    context = seen.context(
        "Inbox", "inbox", rows=rows, filters=filters, counts=counts, cap=queries.STATUS_COUNT_CAP,
        types=TYPES, statuses=STATUSES, severities=SEVERITIES,
        next_url=f"?{urlencode({**active, 'cursor': found.next_cursor})}" if found.next_cursor else None,
        first_url=f"?{urlencode(active)}" if cursor else None, here=f"?{urlencode(active)}",
        link=lambda **changed: "?" + urlencode({k: v for k, v in {**active, **changed}.items() if v}))
    if partial:
        return page("inbox_results.html", context)
    return page("inbox.html", context)


@post("/app/projects/{project_id:uuid}/interactions/status", include_in_schema=False)
async def bulk_status(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Redirect:
    """Set one status on the interactions ticked in the inbox, each through the API's triage (audited)."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=WRITE)
    status = choice((fields.get("status") or [""])[0], Status, "status")
    if status is None:
        raise Problem(422, "choose a status")
    try:
        ids = [uuid.UUID(v) for v in fields.get("ids", [])[:PAGE_SIZE * 4]]
    except ValueError:
        raise Problem(422, "ids must be interaction ids") from None
    for interaction_id in ids:
        await interactions.triage_interaction.fn(request, project_id, interaction_id, InteractionPatch(status=status))
    back = (fields.get("back") or [""])[0]
    return Redirect(f"/app/projects/{project_id}/{back if back.startswith('?') else ''}", status_code=303)


async def _detail_context(request: Request[Any, Any, Any], seen: Desk, project_id: uuid.UUID,
                          interaction_id: uuid.UUID, saved: bool = False) -> dict[str, Any]:
    item = await interactions.get_interaction.fn(request, project_id, interaction_id)
    shots = await media.list_media.fn(request, project_id, interaction_id, cursor=None, limit=50)
    recorded = await replays.list_replays.fn(request, project_id, session_id=None, status=None,
                                             interaction_id=interaction_id, cursor=None, limit=5)
    group = None
    if item.ai_duplicate_group_id:
        group = await interactions.list_interactions.fn(
            request, project_id, type=None, status=None, severity=None, tag=None, assignee_id=None, session_id=None,
            user_id=None, duplicate_group=item.ai_duplicate_group_id, q=None, created_after=None,
            created_before=None, cursor=None, limit=20)
    trail = None
    if seen.is_admin:  # the audit log is an admin's record (see cell/audit/routes.py)
        trail = await audit.list_audit_logs.fn(
            request, project_id, action=None, actor_type=None, actor_id=None, target_type="interaction",
            target_id=str(interaction_id), created_after=None, created_before=None, cursor=None, limit=50)
    trackers = await integrations.list_integrations.fn(request, project_id)
    near = await duplicates.similar_interactions.fn(request, project_id, interaction_id, limit=SUGGESTIONS)
    grouped = {g.id for g in group.data} if group else set()
    logs = item.logs
    return seen.context(
        headline(item.content), "inbox", item=item, headline=headline(item.content),
        words=queries.content_text(item.content) or "", saved=saved, statuses=STATUSES, severities=SEVERITIES,
        console=log_table(logs.console if logs else None), network=log_table(logs.network if logs else None),
        error_log=log_table(logs.errors if logs else None),
        context_rows=sorted((k, _cell(v)) for k, v in item.technical_context.items()),
        images=[m for m in shots.data if (m.content_type or "").startswith("image/")],
        files=[m for m in shots.data if not (m.content_type or "").startswith("image/")],
        replays=recorded.data, group=[g for g in group.data if g.id != item.id] if group else [],
        group_rows=[{"item": g, "headline": headline(g.content)} for g in group.data if g.id != item.id]
        if group else [],
        suggestions=[{"item": s.interaction, "headline": headline(s.interaction.content), "score": s.score}
                     for s in near.data if s.interaction.id not in grouped],
        trail=trail.data if trail else None, errors=[],
        trackers=[t.provider for t in trackers.data if t.enabled and t.provider in ISSUE_PROVIDERS])


@get("/app/projects/{project_id:uuid}/interactions/{interaction_id:uuid}", include_in_schema=False)
async def interaction(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID) -> Template:
    """One interaction: the words, context, logs, screenshot, replay, duplicates, links, triage and trail."""
    seen = await desk(request, project_id)
    return page("interaction.html", await _detail_context(request, seen, project_id, interaction_id))


@post("/app/projects/{project_id:uuid}/interactions/{interaction_id:uuid}", request_class=HTMXRequest,
      include_in_schema=False)
async def triage(request: HTMXRequest, project_id: uuid.UUID, interaction_id: uuid.UUID) -> Response[Any]:
    """Save the triage form (status, severity, assignee, tags) with the API's PATCH; htmx gets the form back."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=WRITE)
    changes: dict[str, Any] = {}
    if "status" in fields:
        changes["status"] = fields["status"][0]
    if "severity" in fields:
        changes["severity"] = fields["severity"][0] or None
    if "assignee_id" in fields:
        changes["assignee_id"] = fields["assignee_id"][0].strip() or None
    if "tags" in fields:
        changes["tags"] = [t.strip() for t in fields["tags"][0].split(",") if t.strip()]
    try:
        patch = msgspec.convert(changes, InteractionPatch)
    except msgspec.ValidationError as exc:
        raise Problem(422, str(exc)) from None
    await interactions.triage_interaction.fn(request, project_id, interaction_id, patch)
    if request.htmx:
        context = await _detail_context(request, seen, project_id, interaction_id, saved=True)
        return page("triage.html", context)
    return Redirect(f"/app/projects/{project_id}/interactions/{interaction_id}", status_code=303)


def _picked(fields: dict[str, list[str]]) -> uuid.UUID:
    """The other interaction a merge, unmerge or dismiss form names."""
    try:
        return uuid.UUID((fields.get("interaction_id") or [""])[0])
    except ValueError:
        raise Problem(422, "interaction_id is not an interaction id") from None


@post("/app/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/merge", include_in_schema=False)
async def merge(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID) -> Redirect:
    """"Merge" on a suggestion: the API's `duplicate-of` puts both in one confirmed group (audited)."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=WRITE)
    await duplicates.mark_duplicate.fn(request, project_id, interaction_id, duplicates.DuplicateOf(_picked(fields)))
    return Redirect(f"/app/projects/{project_id}/interactions/{interaction_id}", status_code=303)


@post("/app/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/unmerge", include_in_schema=False)
async def unmerge(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID) -> Redirect:
    """"Unmerge" on a member of this interaction's group: the API's `DELETE duplicate-of` takes that member
    out (a group of its own again); this page stays open."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=WRITE)
    await duplicates.unmark_duplicate.fn(request, project_id, _picked(fields))
    return Redirect(f"/app/projects/{project_id}/interactions/{interaction_id}", status_code=303)


@post("/app/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/dismiss", request_class=HTMXRequest,
      include_in_schema=False)
async def dismiss(request: HTMXRequest, project_id: uuid.UUID, interaction_id: uuid.UUID) -> Response[Any]:
    """"Not a duplicate" on a suggestion: the API's dismiss says the suggestion is wrong (audited), so it is not
    suggested again and no worker groups the pair. htmx swaps the suggestion out with the empty answer; without
    JavaScript the page is shown again, without it."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=WRITE)
    await duplicates.dismiss_suggestion.fn(request, project_id, interaction_id, _picked(fields))
    if request.htmx:
        return Response("", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)
    return Redirect(f"/app/projects/{project_id}/interactions/{interaction_id}", status_code=303)


@post("/app/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/file", include_in_schema=False)
async def file_issue(request: Request[Any, Any, Any], project_id: uuid.UUID, interaction_id: uuid.UUID) -> Any:
    """"File in Linear/Jira/GitHub": the API's issue request (a job files it; the link shows once it is made)."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=WRITE)
    try:
        wanted = msgspec.convert({"provider": (fields.get("provider") or [""])[0]}, issues.IssueRequestIn)
        await issues.request_issue.fn(request, project_id, interaction_id, wanted)
    except msgspec.ValidationError:
        raise Problem(422, "provider is one of linear, jira, github") from None
    except Problem as problem:
        if problem.status == 404:
            raise
        context = await _detail_context(request, seen, project_id, interaction_id)
        context["errors"] = [problem.detail or problem.title]
        return page("interaction.html", context, problem.status)
    return Redirect(f"/app/projects/{project_id}/interactions/{interaction_id}", status_code=303)


@get("/app/projects/{project_id:uuid}/media/{media_id:uuid}/content", include_in_schema=False)
async def media_content(request: Request[Any, Any, Any], project_id: uuid.UUID, media_id: uuid.UUID) -> Stream:
    """A screenshot or file of the project, for the page's `<img>`: the API's own download."""
    await desk(request, project_id)
    stream: Stream = await media.media_content.fn(request, project_id, media_id)
    return stream


@get("/app/projects/{project_id:uuid}/replays/{replay_id:uuid}/events", include_in_schema=False)
async def replay_events(request: Request[Any, Any, Any], project_id: uuid.UUID, replay_id: uuid.UUID) -> Stream:
    """A replay's events, for the player in the page: the API's own stream."""
    await desk(request, project_id)
    stream: Stream = await replays.replay_events.fn(request, project_id, replay_id)
    return stream


ROUTES = [Router(path="/", exception_handlers={Problem: page_problem_handler}, route_handlers=[
    inbox, bulk_status, interaction, triage, merge, unmerge, dismiss, file_issue, media_content, replay_events,
    *residency_pages.ROUTES, *settings_pages.ROUTES, *workspace.ROUTES])]
