"""Jira Cloud: issues filed with REST v3 `POST /rest/api/3/issue`, basic auth with email and API token.

The description is an Atlassian Document Format (ADF) document; the user's
words go in as plain text nodes, which Jira never interprets as markup.
Jira takes no idempotency key, so a retry after an attempt that may have
filed the issue searches recent issues of the project (JQL through
`POST /rest/api/3/search/jql`) for Relay's marker line. That search is
eventually consistent: an issue filed seconds before the retry may not show
yet, and then a second one is filed (the residual risk the job documents).
"""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from typing import Any

import httpx

from cell import netguard
from cell.integrations.providers import CreatedIssue, NewIssue, ProviderError, check, send
from cell.integrations.types import JiraConfig

SEARCH_PAGE = 50


def _text(value: str, marks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": value}
    if marks:
        node["marks"] = marks
    return node


def adf(issue: NewIssue) -> dict[str, Any]:
    """The issue body as an ADF document: one paragraph per block of the user's text, the facts, the link back."""
    content: list[dict[str, Any]] = []
    for block in (b.strip("\n") for b in issue.text.split("\n\n")):
        if not block.strip():
            continue
        nodes: list[dict[str, Any]] = []
        for i, line in enumerate(block.split("\n")):
            if i:
                nodes.append({"type": "hardBreak"})
            if line:
                nodes.append(_text(line))
        content.append({"type": "paragraph", "content": nodes})
    facts: list[dict[str, Any]] = []
    for i, (name, value) in enumerate(issue.facts):
        if i:
            facts.append({"type": "hardBreak"})
        facts += [_text(f"{name}: ", [{"type": "strong"}]), _text(value)]
    if facts:
        content.append({"type": "paragraph", "content": facts})
    link = [{"type": "link", "attrs": {"href": issue.link}}] if issue.link else None
    content.append({"type": "paragraph", "content": [_text(issue.marker, link)]})
    return {"type": "doc", "version": 1, "content": content}


class JiraClient:
    """Jira Cloud's REST API v3 for one project's integration."""

    def __init__(self, http: httpx.AsyncClient, config: JiraConfig, policy: netguard.Policy) -> None:
        self.http = http
        self.config = config
        self.policy = policy
        self.base = config.base_url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        if not self.config.api_token:
            raise ProviderError("jira: no API token configured", retry=False)
        pair = f"{self.config.email}:{self.config.api_token}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode(), "Accept": "application/json"}

    def _issue(self, body: Any) -> CreatedIssue:
        try:
            key = str(body["key"])
            return CreatedIssue(external_id=str(body["id"]), key=key, url=f"{self.base}/browse/{key}")
        except (KeyError, TypeError) as exc:
            raise ProviderError("jira: the issue lacks `id` or `key`", retry=False) from exc

    async def create(self, issue: NewIssue) -> CreatedIssue:
        """`POST /rest/api/3/issue` in the configured project with the configured issue type."""
        fields = {"project": {"key": self.config.project_key}, "issuetype": {"name": self.config.issue_type},
                  "summary": issue.title, "description": adf(issue)}
        response = await send(self.http, self.policy, "POST", f"{self.base}/rest/api/3/issue",
                              headers=self._headers(), json={"fields": fields}, doing="jira create issue")
        return self._issue(check(response, "jira create issue", ok=(201, 200)))

    async def find(self, issue: NewIssue, since: datetime) -> CreatedIssue | None:
        """A recent issue of the project whose description carries this interaction's marker."""
        minutes = math.ceil((datetime.now(UTC) - since).total_seconds() / 60) + 5
        jql = f'project = "{self.config.project_key}" AND created >= -{minutes}m ORDER BY created DESC'
        response = await send(self.http, self.policy, "POST", f"{self.base}/rest/api/3/search/jql",
                              headers=self._headers(), doing="jira search",
                              json={"jql": jql, "fields": ["description"], "maxResults": SEARCH_PAGE})
        body = check(response, "jira search")
        for found in body.get("issues") or []:
            description = (found.get("fields") or {}).get("description")
            if description is not None and issue.marker in json.dumps(description):
                return self._issue(found)
        return None
