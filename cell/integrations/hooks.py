"""Inbound webhooks from Linear, Jira and GitHub: the issue's state synced back onto the interaction.

The router forwards `POST /v1/hooks/{project_id}/{provider}` unauthenticated
(a `public` actor); the only proof of who sent it is the provider's signature
over the raw body, keyed with the webhook secret stored in that project's
integration. So nothing is parsed before the signature verifies (compared in
constant time), a project's secret only ever opens its own project's links,
and a missing secret or signature is the same 401 as a wrong one.

- GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
- Linear: `Linear-Signature: <hex HMAC-SHA256 of the body>`, and the body's
  `webhookTimestamp` within a minute of now (Linear's own guidance).
- Jira Cloud: admin webhooks registered with a secret send
  `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>` (the WebSub
  method=signature format); Relay takes that and nothing weaker, such as a
  token in the URL.

A delivery that shows an issue closed (GitHub `closed`, Linear state type
`completed`/`canceled`, Jira status category `done`) moves the linked
interaction to `resolved` (completed) or `closed` (not planned), audits it as
the system and enqueues `notify.issue_closed` for the notifications worker.
The link row keeps the issue's last known state and changes only when the
state differs, so a delivery repeated, or a close that Jira reports twice,
changes and notifies once; a close after a reopen notifies again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

import asyncpg
import msgspec
from litestar import Request, post

from cell import audit
from cell.context import ctx
from cell.integrations.issues import system
from cell.integrations.queries import load_integration, mark_synced
from cell.outbox import add as enqueue
from cell.secrets import SecretError
from common.problems import Problem

log = logging.getLogger("relay.integrations")

LINEAR_TOLERANCE_MS = 60_000
NOTIFY_ISSUE_CLOSED = "notify.issue_closed"
WONT_DO = frozenset({"won't do", "won't fix", "wont do", "wont fix", "cannot reproduce", "duplicate", "declined"})

State = Literal["open", "closed"]
Resolution = Literal["completed", "not_planned"]


class HookReceipt(msgspec.Struct, kw_only=True):
    """What the provider gets back: the state Relay read from the delivery and how many links it changed."""

    state: State | None
    changed: int


@dataclass(frozen=True, slots=True)
class IssueState:
    """An issue's state as one delivery reports it."""

    external_id: str
    state: State
    resolution: Resolution | None = None


def _hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def verify(provider: str, secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether the delivery carries the provider's signature of exactly these bytes under `secret`."""
    if provider == "github":
        return _same(headers.get("x-hub-signature-256"), "sha256=" + _hmac(secret, body))
    if provider == "jira":
        return _same(headers.get("x-hub-signature"), "sha256=" + _hmac(secret, body))
    if provider == "linear":
        return _same(headers.get("linear-signature"), _hmac(secret, body))
    return False


def _github(payload: dict[str, Any], headers: Mapping[str, str]) -> IssueState | None:
    issue = payload.get("issue")
    if headers.get("x-github-event") != "issues" or not isinstance(issue, dict) or "id" not in issue:
        return None  # ping, and events about other things
    if issue.get("state") == "closed":
        reason = issue.get("state_reason")
        return IssueState(str(issue["id"]), "closed", "completed" if reason in (None, "completed") else "not_planned")
    return IssueState(str(issue["id"]), "open")


def _linear(payload: dict[str, Any], headers: Mapping[str, str]) -> IssueState | None:
    data = payload.get("data")
    if payload.get("type") != "Issue" or payload.get("action") not in ("create", "update") \
            or not isinstance(data, dict) or "id" not in data:
        return None
    state = data.get("state")
    kind = state.get("type") if isinstance(state, dict) else None
    if kind is None:
        return None  # an update that does not say where the issue stands
    if kind == "completed":
        return IssueState(str(data["id"]), "closed", "completed")
    if kind in ("canceled", "duplicate"):
        return IssueState(str(data["id"]), "closed", "not_planned")
    return IssueState(str(data["id"]), "open")


def _jira(payload: dict[str, Any], headers: Mapping[str, str]) -> IssueState | None:
    issue = payload.get("issue")
    if payload.get("webhookEvent") not in ("jira:issue_updated", "jira:issue_created") \
            or not isinstance(issue, dict) or "id" not in issue:
        return None
    fields = issue.get("fields") or {}
    category = ((fields.get("status") or {}).get("statusCategory") or {}).get("key")
    if category is None:
        return None
    if category != "done":
        return IssueState(str(issue["id"]), "open")
    resolution = str((fields.get("resolution") or {}).get("name") or "").strip().lower().replace("’", "'")
    return IssueState(str(issue["id"]), "closed", "not_planned" if resolution in WONT_DO else "completed")


PARSERS: dict[str, Callable[[dict[str, Any], Mapping[str, str]], IssueState | None]] = {
    "github": _github, "linear": _linear, "jira": _jira}


def _payload(body: bytes, content_type: str) -> dict[str, Any]:
    """The JSON payload; GitHub may send it form-encoded as `payload=`."""
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            body = parse_qs(body.decode())["payload"][0].encode()
        payload = msgspec.json.decode(body)
    except (msgspec.DecodeError, KeyError, UnicodeDecodeError) as exc:
        raise Problem(400, "the delivery is not a JSON object") from exc
    if not isinstance(payload, dict):
        raise Problem(400, "the delivery is not a JSON object")
    return payload


async def apply(conn: asyncpg.Connection, project_id: uuid.UUID, provider: str, event: IssueState,
                ip: str | None) -> int:
    """Record the issue's state on the project's links to it and act on a close; the number of links changed.

    Runs in the caller's transaction. Only this project's links are read: the
    same issue id in another project is another project's business.
    """
    links = await conn.fetch(
        """UPDATE integration_links SET external_state = $4, state_changed_at = now()
            WHERE project_id = $1 AND provider = $2 AND external_id = $3 AND internal_type = 'interaction'
              AND external_state IS DISTINCT FROM $4
            RETURNING internal_id, external_url""", project_id, provider, event.external_id, event.state)
    actor = system(project_id, provider, ip)
    for link in links:
        interaction_id: uuid.UUID = link["internal_id"]
        meta: dict[str, Any] = {"provider": provider, "external_id": event.external_id}
        if event.state == "open":
            await audit.record(conn, actor, "interaction.issue_reopened", "interaction", interaction_id, meta)
            continue
        status = await conn.fetchval("SELECT status::text FROM interactions WHERE project_id = $1 AND id = $2"
                                     " FOR UPDATE", project_id, interaction_id)
        if status is None:
            continue  # the interaction was erased; its link row outlived it
        target = "resolved" if event.resolution == "completed" else "closed"
        if status not in ("resolved", "closed"):
            await conn.execute("UPDATE interactions SET status = $3, updated_at = now() WHERE project_id = $1"
                               " AND id = $2", project_id, interaction_id, target)
            await enqueue(conn, project_id, "interaction.updated",
                          {"interaction_id": str(interaction_id), "fields": ["status"]})
        await audit.record(conn, actor, "interaction.issue_closed", "interaction", interaction_id, meta | {
            "resolution": event.resolution, "status_from": status,
            "status_to": target if status not in ("resolved", "closed") else status})
        await enqueue(conn, project_id, NOTIFY_ISSUE_CLOSED, {
            "project_id": str(project_id), "interaction_id": str(interaction_id), "provider": provider,
            "external_id": event.external_id, "external_url": link["external_url"],
            "resolution": event.resolution})
    return len(links)


@post("/v1/hooks/{project_id:uuid}/{provider:str}", status_code=200)
async def receive_hook(request: Request[Any, Any, Any], project_id: uuid.UUID, provider: str) -> HookReceipt:
    """A provider's webhook delivery: 401 unless signed with the project's secret, then the issue's state synced."""
    context = ctx(request)
    await context.auth.public_project(request.scope, project_id)  # type: ignore[arg-type]
    parse = PARSERS.get(provider)
    if parse is None:
        raise Problem(404, "no such webhook")
    body = await request.body()
    try:
        config = await load_integration(context.pool, context.settings, project_id, provider)
    except SecretError:
        log.warning("webhook for %s of project %s: the webhook secret does not open", provider, project_id)
        config = None
    secret: str | None = getattr(config, "webhook_secret", None)
    if config is None or not secret or not verify(provider, secret, request.headers, body):
        raise Problem(401, "the delivery's signature does not verify")
    payload = _payload(body, request.headers.get("content-type", ""))
    if provider == "linear":
        stamp = payload.get("webhookTimestamp")
        if not isinstance(stamp, int) or abs(time.time() * 1000 - stamp) > LINEAR_TOLERANCE_MS:
            raise Problem(401, "the delivery's webhookTimestamp is missing or not within a minute of now")
    event = parse(payload, request.headers)
    if event is None:
        return HookReceipt(state=None, changed=0)
    actor = request.scope.get("state", {}).get("actor")
    async with context.pool.acquire() as conn, conn.transaction():
        changed = await apply(conn, project_id, provider, event, getattr(actor, "ip", None))
        await mark_synced(conn, project_id, provider)
    return HookReceipt(state=event.state, changed=changed)


ROUTES = [receive_hook]
