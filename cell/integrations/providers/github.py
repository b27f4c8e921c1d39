"""GitHub: issues filed with REST `POST /repos/{owner}/{repo}/issues`, token as `Authorization: Bearer`.

GitHub takes no idempotency key. A retry after an attempt that may have filed
the issue lists the repository's issues updated since that attempt began
(`GET /repos/{owner}/{repo}/issues?since=…`, read from the primary, not the
search index) and looks for Relay's marker line in their bodies. Only the
newest 100 are read: a repository that gets more than 100 new or updated
issues between a lost answer and its retry may get a second issue.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from cell import netguard
from cell.integrations.providers import CreatedIssue, NewIssue, ProviderError, check, send
from cell.integrations.types import GithubConfig

API_VERSION = "2022-11-28"


class GithubClient:
    """GitHub's REST API for one project's integration (one repository)."""

    def __init__(self, http: httpx.AsyncClient, config: GithubConfig, policy: netguard.Policy) -> None:
        self.http = http
        self.config = config
        self.policy = policy
        self.repo_url = f"{config.api_url.rstrip('/')}/repos/{config.owner}/{config.repo}"

    def _headers(self) -> dict[str, str]:
        if not self.config.token:
            raise ProviderError("github: no token configured", retry=False)
        return {"Authorization": f"Bearer {self.config.token}", "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION}

    def _check(self, response: httpx.Response, doing: str, ok: tuple[int, ...]) -> Any:
        # GitHub answers an exhausted rate limit with 403 (or 429) and x-ratelimit-remaining: 0.
        if response.status_code == 403 and response.headers.get("x-ratelimit-remaining") == "0":
            raise ProviderError(f"{doing}: rate limited", retry=True)
        return check(response, doing, ok=ok)

    def _issue(self, body: Any) -> CreatedIssue:
        try:
            return CreatedIssue(external_id=str(body["id"]),
                                key=f"{self.config.owner}/{self.config.repo}#{body['number']}",
                                url=str(body["html_url"]))
        except (KeyError, TypeError) as exc:
            raise ProviderError("github: the issue lacks `id`, `number` or `html_url`", retry=False) from exc

    async def create(self, issue: NewIssue) -> CreatedIssue:
        """`POST /repos/{owner}/{repo}/issues` with title and Markdown body."""
        response = await send(self.http, self.policy, "POST", f"{self.repo_url}/issues", headers=self._headers(),
                              json={"title": issue.title, "body": issue.markdown()}, doing="github create issue")
        return self._issue(self._check(response, "github create issue", (201,)))

    async def find(self, issue: NewIssue, since: datetime) -> CreatedIssue | None:
        """An issue of the repository updated since `since` whose body carries this interaction's marker."""
        after = (since.astimezone(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        response = await send(self.http, self.policy, "GET", f"{self.repo_url}/issues", headers=self._headers(),
                              params={"state": "all", "since": after, "sort": "created", "direction": "desc",
                                      "per_page": "100"}, doing="github list issues")
        for found in self._check(response, "github list issues", (200,)) or []:
            if isinstance(found, dict) and "pull_request" not in found and issue.marker in (found.get("body") or ""):
                return self._issue(found)
        return None
