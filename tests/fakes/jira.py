"""Jira Cloud's REST API v3 as far as Relay uses it, and Jira's admin webhook deliveries.

- `POST /rest/api/3/issue` `{"fields": {project: {key}, issuetype: {name},
  summary, description (ADF)}}` with basic auth `email:api_token` → 201
  `{"id", "key", "self"}`; 401 for bad credentials; 400 `{"errorMessages": [],
  "errors": {field: message}}` for a bad field (a description that is not an
  ADF document, a summary over 255 characters, an unknown project).
- `POST /rest/api/3/search/jql` `{jql, fields, maxResults}` → 200
  `{"issues": [{id, key, self, fields}], "isLast": true}`.
- Webhooks (admin webhooks with a secret): `X-Hub-Signature: sha256=<hex
  HMAC-SHA256 of the body>`, `X-Atlassian-Webhook-Identifier`; body
  `{timestamp, webhookEvent: "jira:issue_updated", issue: {id, key, self,
  fields: {status: {statusCategory: {key}}, resolution}}, changelog}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any

from tests.fakes.server import Answer, FakeServer, Recorded

STATUS = {"todo": ("To Do", "new", 2), "progress": ("In Progress", "indeterminate", 4), "done": ("Done", "done", 3)}


def _bad(errors: dict[str, str]) -> Answer:
    return Answer(400, {"errorMessages": [], "errors": errors})


def _is_adf(doc: Any) -> bool:
    """An ADF document whose text nodes are non-empty strings."""
    def ok(node: Any) -> bool:
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            return False
        if node["type"] == "text" and (not isinstance(node.get("text"), str) or not node["text"]):
            return False
        return all(ok(child) for child in node.get("content", []))
    return isinstance(doc, dict) and doc.get("type") == "doc" and doc.get("version") == 1 \
        and isinstance(doc.get("content"), list) and ok(doc)


class FakeJira(FakeServer):
    """Projects exist on first use unless named `NOPE`; (email, token) pairs must be allowed first."""

    def __init__(self) -> None:
        super().__init__()
        self.credentials: set[str] = set()
        self.issues: list[dict[str, Any]] = []
        self._next_id = 10_000

    def allow(self, email: str, token: str) -> None:
        with self.lock:
            self.credentials.add(base64.b64encode(f"{email}:{token}".encode()).decode())

    def project_issues(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return [i for i in self.issues if i["fields"]["project"]["key"] == key]

    def faultable(self, request: Recorded) -> bool:
        return request.method == "POST" and request.path == "/rest/api/3/issue"

    def route(self, request: Recorded) -> Answer:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Basic ") or auth[len("Basic "):] not in self.credentials:
            return Answer(401, b"Client must be authenticated to access this resource.",
                          {"Content-Type": "text/html;charset=UTF-8"})
        if request.method == "POST" and request.path == "/rest/api/3/issue":
            return self._create(request.json)
        if request.method == "POST" and request.path == "/rest/api/3/search/jql":
            jql = (request.json or {}).get("jql", "")
            match = re.search(r'project\s*=\s*"?([A-Z][A-Z0-9_]*)"?', jql)
            found = [i for i in reversed(self.issues) if match and i["fields"]["project"]["key"] == match.group(1)]
            wanted = (request.json or {}).get("fields") or []
            return Answer(200, {"issues": [{"id": i["id"], "key": i["key"], "self": i["self"],
                                            "fields": {f: i["fields"].get(f) for f in wanted}} for i in found],
                                "isLast": True})
        return Answer(404, {"errorMessages": ["Not found"], "errors": {}})

    def _create(self, body: Any) -> Answer:
        fields = (body or {}).get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return _bad({"fields": "fields is required"})
        key = (fields.get("project") or {}).get("key")
        if not key or key == "NOPE":
            return _bad({"project": "valid project is required"})
        if not (fields.get("issuetype") or {}).get("name"):
            return _bad({"issuetype": "Specify an issue type"})
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 255 or "\n" in summary:
            return _bad({"summary": "Summary must be less than 255 characters."})
        if "description" in fields and not _is_adf(fields["description"]):
            return _bad({"description": "Operation value must be an Atlassian Document (see the Atlassian "
                                        "Document Format)"})
        self._next_id += 1
        number = len(self.project_issues(key)) + 1
        issue = {"id": str(self._next_id), "key": f"{key}-{number}",
                 "self": f"https://example.atlassian.net/rest/api/3/issue/{self._next_id}",
                 "fields": {"project": {"key": key}, "summary": summary, "issuetype": fields["issuetype"],
                            "description": fields.get("description")}}
        self.issues.append(issue)
        return Answer(201, {k: issue[k] for k in ("id", "key", "self")})


def delivery(issue: dict[str, Any], status: str, secret: str, *, resolution: str | None = "Done",
             event: str = "jira:issue_updated") -> tuple[dict[str, str], bytes]:
    """An admin webhook delivery moving `issue` (as the fake created it) to `status`: headers and signed body."""
    name, category, category_id = STATUS[status]
    payload = {
        "timestamp": int(time.time() * 1000), "webhookEvent": event, "issue_event_type_name": "issue_generic",
        "user": {"accountId": "5b10a2844c20165700ede21g", "displayName": "Maintainer"},
        "issue": {"id": issue["id"], "key": issue["key"], "self": issue["self"], "fields": {
            "summary": issue["fields"]["summary"], "project": issue["fields"]["project"],
            "status": {"name": name, "statusCategory": {"id": category_id, "key": category, "name": name}},
            "resolution": {"name": resolution} if status == "done" and resolution else None}},
        "changelog": {"id": "10100", "items": [{"field": "status", "fieldtype": "jira", "from": "10000",
                                                "fromString": "In Progress", "to": "10001", "toString": name}]},
    }
    body = json.dumps(payload).encode()
    return {"Content-Type": "application/json; charset=UTF-8", "User-Agent": "Atlassian Webhook HTTP Client",
            "X-Atlassian-Webhook-Identifier": str(uuid.uuid4()),
            "X-Hub-Signature": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}, body
