"""GitHub's REST API as far as Relay uses it, and GitHub's `issues` webhook deliveries.

- `POST /repos/{owner}/{repo}/issues` {title, body?, labels?, assignees?} with
  `Authorization: Bearer <token>` → 201 and the issue object (id, node_id,
  number, url, html_url, state, title, body, user, labels, created_at …);
  401 `{"message": "Bad credentials"}` for an unknown token; 422
  `Validation Failed` without a title; 404 `Not Found` for a repository the
  token cannot see. GitHub refuses requests without a User-Agent (403).
- `GET /repos/{owner}/{repo}/issues?state=&since=&sort=&direction=&per_page=`
  → 200 and a list of issue objects, newest first.
- Webhooks: `X-GitHub-Event: issues`, `X-GitHub-Delivery`, and
  `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.fakes.server import Answer, FakeServer, Recorded

DOCS = "https://docs.github.com/rest/issues/issues"
_REPO = re.compile(r"^/repos/([^/]+)/([^/]+)/issues$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub(FakeServer):
    """Repositories exist on first use; tokens must be allowed first."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()
        self.issues: dict[str, list[dict[str, Any]]] = {}
        self._next_id = 1_000_000

    def allow(self, token: str) -> None:
        with self.lock:
            self.tokens.add(token)

    def repo_issues(self, owner: str, repo: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.issues.get(f"{owner}/{repo}", []))

    def faultable(self, request: Recorded) -> bool:
        return request.method == "POST" and bool(_REPO.match(request.path))

    def route(self, request: Recorded) -> Answer:
        match = _REPO.match(request.path)
        if match is None:
            return Answer(404, {"message": "Not Found", "documentation_url": DOCS})
        if not request.headers.get("user-agent"):
            return Answer(403, b"Request forbidden by administrative rules. Please make sure your request has a "
                               b"User-Agent header.", {"Content-Type": "text/plain"})
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self.tokens:
            return Answer(401, {"message": "Bad credentials", "documentation_url": DOCS})
        owner, repo = match.groups()
        if owner == "missing":
            return Answer(404, {"message": "Not Found", "documentation_url": DOCS})
        full = f"{owner}/{repo}"
        if request.method == "GET":
            since = request.query.get("since", [""])[0]
            found = [i for i in reversed(self.issues.get(full, [])) if not since or i["updated_at"] >= since]
            return Answer(200, found[: int(request.query.get("per_page", ["30"])[0])])
        if request.method != "POST":
            return Answer(404, {"message": "Not Found", "documentation_url": DOCS})
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("title"), str) or not body["title"]:
            return Answer(422, {"message": "Validation Failed", "documentation_url": DOCS,
                                "errors": [{"resource": "Issue", "code": "missing_field", "field": "title"}]})
        self._next_id += 1
        issues = self.issues.setdefault(full, [])
        number = len(issues) + 1
        issue = {
            "id": self._next_id, "node_id": f"I_kwDO{self._next_id}", "number": number,
            "url": f"{self.url}/repos/{full}/issues/{number}",
            "repository_url": f"{self.url}/repos/{full}",
            "html_url": f"https://github.com/{full}/issues/{number}",
            "state": "open", "state_reason": None, "title": body["title"], "body": body.get("body"),
            "user": {"login": "relay-bot", "id": 1, "type": "Bot"}, "labels": [], "assignees": [],
            "locked": False, "comments": 0, "created_at": _now(), "updated_at": _now(), "closed_at": None,
        }
        issues.append(issue)
        return Answer(201, issue, {"Location": issue["url"]})


def delivery(issue: dict[str, Any], action: str, secret: str, *, state_reason: str | None = "completed",
             event: str = "issues") -> tuple[dict[str, str], bytes]:
    """An `issues` webhook delivery for `issue` (as the fake created it): headers and the signed raw body."""
    state = "closed" if action == "closed" else "open"
    owner_repo = issue["html_url"].split("github.com/", 1)[1].rsplit("/issues/", 1)[0]
    payload = {
        "action": action,
        "issue": issue | {"state": state, "state_reason": state_reason if state == "closed" else None,
                          "closed_at": _now() if state == "closed" else None, "updated_at": _now()},
        "repository": {"id": 4242, "name": owner_repo.split("/")[1], "full_name": owner_repo, "private": True},
        "sender": {"login": "maintainer", "id": 2, "type": "User"},
    }
    body = json.dumps(payload).encode()
    return {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/5d3b4a8", "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()), "X-GitHub-Hook-ID": "123456",
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}, body
