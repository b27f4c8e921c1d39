"""Linear's GraphQL API as far as Relay uses it, and Linear's Issue webhook deliveries.

- `POST /graphql` with `Authorization: <API key>` (personal keys carry no
  `Bearer`) and `{"query", "variables"}`:
  `issueCreate(input: IssueCreateInput!)` → `{"data": {"issueCreate":
  {"success": true, "issue": {"id", "identifier", "url"}}}}`; the input needs
  `teamId` and may carry `id` (a UUID v4 the caller chooses; a second create
  with the same id is refused); `issues(filter: {id: {eq: $id}})` →
  `{"data": {"issues": {"nodes": [...]}}}`. Errors come as `{"errors": [{message,
  extensions: {code, type, userPresentableMessage}}]}` (authentication errors
  with HTTP 400, as Linear answers them).
- Webhooks: `Linear-Signature: <hex HMAC-SHA256 of the body>`,
  `Linear-Delivery`, `Linear-Event`, and `webhookTimestamp` (ms) in the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.fakes.server import Answer, FakeServer, Recorded

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
WORKFLOW = {"started": ("In Progress", "started"), "completed": ("Done", "completed"),
            "canceled": ("Canceled", "canceled"), "unstarted": ("Todo", "unstarted")}


def _error(message: str, code: str, status: int = 200) -> Answer:
    return Answer(status, {"data": None, "errors": [{"message": message, "extensions": {
        "code": code, "type": code.lower().replace("_", " "), "userError": True,
        "userPresentableMessage": message}}]})


class FakeLinear(FakeServer):
    """Teams exist on first use (their key is the team id's first letters); API keys must be allowed first."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()
        self.issues: dict[str, dict[str, Any]] = {}

    def allow(self, key: str) -> None:
        with self.lock:
            self.keys.add(key)

    def team_issues(self, team_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [i for i in self.issues.values() if i["teamId"] == team_id]

    def faultable(self, request: Recorded) -> bool:
        return request.method == "POST" and "issueCreate" in ((request.json or {}).get("query") or "")

    def route(self, request: Recorded) -> Answer:
        if request.path != "/graphql" or request.method != "POST":
            return Answer(404, {"error": "not found"})
        if request.headers.get("authorization") not in self.keys:
            return _error("Authentication required, not authenticated", "AUTHENTICATION_ERROR", 400)
        body = request.json or {}
        query, variables = body.get("query") or "", body.get("variables") or {}
        if "issueCreate" in query:
            return self._create(variables.get("input") or {})
        if "issues(" in query:
            found = self.issues.get(str(variables.get("id")))
            nodes = [{k: found[k] for k in ("id", "identifier", "url")}] if found else []
            return Answer(200, {"data": {"issues": {"nodes": nodes}}})
        return _error("Cannot query field on type Query", "GRAPHQL_VALIDATION_FAILED", 400)

    def _create(self, given: dict[str, Any]) -> Answer:
        team = given.get("teamId")
        if not isinstance(team, str) or not team:
            return _error('Variable "$input" got invalid value; Field "teamId" of required type "String!" was '
                          "not provided.", "GRAPHQL_VALIDATION_FAILED", 400)
        issue_id = given.get("id") or str(uuid.uuid4())
        if not _UUID4.match(issue_id):
            return _error("id must be a UUID v4", "INVALID_INPUT")
        if issue_id in self.issues:
            return _error("Entity already exists", "INVALID_INPUT")
        key = "".join(c for c in team.upper() if c.isalpha())[:3] or "ENG"
        number = len(self.team_issues(team)) + 1
        identifier = f"{key}-{number}"
        issue = {"id": issue_id, "identifier": identifier, "teamId": team, "title": given.get("title"),
                 "description": given.get("description"), "number": number,
                 "url": f"https://linear.app/acme/issue/{identifier.lower()}/relay",
                 "createdAt": datetime.now(UTC).isoformat()}
        self.issues[issue_id] = issue
        return Answer(200, {"data": {"issueCreate": {"success": True, "issue": {
            k: issue[k] for k in ("id", "identifier", "url")}}}})


def delivery(issue: dict[str, Any], state: str, secret: str, *, action: str = "update",
             timestamp_ms: int | None = None) -> tuple[dict[str, str], bytes]:
    """An Issue webhook delivery moving `issue` to a workflow state of type `state`: headers and signed body."""
    name, kind = WORKFLOW[state]
    now = datetime.now(UTC).isoformat()
    payload = {
        "action": action, "type": "Issue", "createdAt": now, "url": issue["url"],
        "organizationId": str(uuid.uuid4()), "webhookId": str(uuid.uuid4()),
        "webhookTimestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        "actor": {"id": str(uuid.uuid4()), "name": "Maintainer", "type": "user"},
        "data": {"id": issue["id"], "identifier": issue["identifier"], "number": issue.get("number", 1),
                 "title": issue.get("title"), "url": issue["url"], "teamId": issue.get("teamId"),
                 "stateId": str(uuid.uuid4()),
                 "state": {"id": str(uuid.uuid4()), "name": name, "type": kind, "color": "#5e6ad2"},
                 "updatedAt": now, "createdAt": issue.get("createdAt", now)},
        "updatedFrom": {"stateId": str(uuid.uuid4()), "updatedAt": now},
    }
    body = json.dumps(payload).encode()
    return {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Linear-Webhook",
            "Linear-Delivery": str(uuid.uuid4()), "Linear-Event": "Issue",
            "Linear-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}, body
