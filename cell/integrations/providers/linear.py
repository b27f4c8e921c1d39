"""Linear: issues filed with the GraphQL `issueCreate` mutation in the configured team.

Linear lets the caller choose the new issue's id (`IssueCreateInput.id`, a
UUID v4). Relay derives it from the project, the interaction and the team, so
the id is an idempotency key: a retry first asks Linear for that id and finds
the issue an earlier attempt filed, whatever happened after Linear answered.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import httpx

from cell import netguard
from cell.integrations.providers import CreatedIssue, NewIssue, ProviderError, check, send
from cell.integrations.types import LinearConfig

CREATE = """mutation IssueCreate($input: IssueCreateInput!) {
  issueCreate(input: $input) { success issue { id identifier url } }
}"""

FIND = """query IssueById($id: ID!) {
  issues(filter: { id: { eq: $id } }, first: 1) { nodes { id identifier url } }
}"""


def issue_id(issue: NewIssue, team_id: str) -> str:
    """The id Relay asks Linear to give this interaction's issue in this team (UUID v4 format)."""
    seed = f"relay:linear:{issue.project_id}:{issue.interaction_id}:{team_id}".encode()
    return str(uuid.UUID(bytes=hashlib.sha256(seed).digest()[:16], version=4))


class LinearClient:
    """Linear's GraphQL API for one project's integration (personal API key in `Authorization`)."""

    def __init__(self, http: httpx.AsyncClient, config: LinearConfig, policy: netguard.Policy) -> None:
        self.http = http
        self.config = config
        self.policy = policy

    async def _graphql(self, query: str, variables: dict[str, Any], doing: str) -> dict[str, Any]:
        if not self.config.api_key:
            raise ProviderError("linear: no API key configured", retry=False)
        response = await send(self.http, self.policy, "POST", self.config.api_url, doing=doing,
                              headers={"Authorization": self.config.api_key, "Accept": "application/json"},
                              json={"query": query, "variables": variables})
        body = check(response, doing, ok=(200, 400))  # GraphQL errors come as 200 or 400 with `errors`
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            codes = {str((e.get("extensions") or {}).get("code", "")) for e in errors if isinstance(e, dict)}
            raise ProviderError(f"{doing}: GraphQL error {','.join(sorted(codes)) or 'unknown'}",
                                retry="RATELIMITED" in codes or "INTERNAL_SERVER_ERROR" in codes)
        if response.status_code != 200 or not isinstance(body.get("data"), dict):
            raise ProviderError(f"{doing}: HTTP {response.status_code} without data", retry=False)
        data: dict[str, Any] = body["data"]
        return data

    async def create(self, issue: NewIssue) -> CreatedIssue:
        """`issueCreate` with Relay's id for the issue, title and Markdown description."""
        data = await self._graphql(CREATE, {"input": {
            "id": issue_id(issue, self.config.team_id), "teamId": self.config.team_id,
            "title": issue.title, "description": issue.markdown()}}, "linear issueCreate")
        result = data.get("issueCreate") or {}
        created = result.get("issue")
        if not result.get("success") or not isinstance(created, dict):
            raise ProviderError("linear issueCreate: success is false", retry=False)
        return _issue(created)

    async def find(self, issue: NewIssue, since: datetime) -> CreatedIssue | None:
        """The issue with Relay's id for this interaction, if an earlier attempt filed it."""
        data = await self._graphql(FIND, {"id": issue_id(issue, self.config.team_id)}, "linear issues")
        nodes = (data.get("issues") or {}).get("nodes") or []
        return _issue(nodes[0]) if nodes and isinstance(nodes[0], dict) else None


def _issue(node: dict[str, Any]) -> CreatedIssue:
    try:
        return CreatedIssue(external_id=str(node["id"]), key=str(node["identifier"]), url=str(node["url"]))
    except KeyError as exc:
        raise ProviderError(f"linear: the issue lacks `{exc.args[0]}`", retry=False) from exc
