"""Issue trackers a project files interactions into: what they are given, what they give back, how to call them.

Each provider module (linear, jira, github) turns a `NewIssue` into its own
wire format over the worker's httpx client and answers a `CreatedIssue`. A
failure is a `ProviderError` that says whether retrying can help: a network
error, a 5xx or a rate limit can; a refused token or a rejected field cannot,
until someone changes the integration's config.

Every call goes through `send`, which vets the destination with the SSRF guard
at call time and connects to the address the guard vetted (not to whatever the
name resolves to a moment later), so a rebinding resolver cannot aim a
project's token at the cell's own network.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from cell import netguard

MAX_TITLE = 200
MAX_TEXT = 10_000
USER_AGENT = "Relay-Integrations"


class ProviderError(Exception):
    """A provider call failed; `retry` says whether the same call may succeed later.

    The message is Relay's own (a status code and what was being done), never
    the provider's response text, which may echo the token or the user's words.
    """

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True, slots=True)
class NewIssue:
    """An issue to file, composed from one interaction; providers render it in their own markup."""

    project_id: uuid.UUID
    interaction_id: uuid.UUID
    title: str
    text: str
    facts: tuple[tuple[str, str], ...]
    """Short labelled values (type, severity, tags …) shown under the text."""
    link: str | None
    """Where the interaction is in the dashboard, when the cell knows the dashboard's address."""

    @property
    def marker(self) -> str:
        """A line in every issue body naming the interaction, by which a retry finds an issue it already filed."""
        return f"Relay interaction {self.interaction_id}"

    def markdown(self) -> str:
        """The body for trackers that render Markdown (GitHub, Linear).

        The user's words go in a fenced block: a report must not @-mention the
        team's accounts, embed remote images or inject HTML into the tracker.
        """
        longest = max((len(run) for run in re.findall(r"`+", self.text)), default=0)
        fence = "`" * max(3, longest + 1)
        lines = [f"{fence}text", self.text, fence, ""] if self.text else []
        lines += [f"**{name}:** {value}  " for name, value in self.facts]
        lines.append("")
        lines.append(f"[{self.marker}]({self.link})" if self.link else self.marker)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class CreatedIssue:
    """An issue as its provider identifies it: a stable id, the key people use, and its page."""

    external_id: str
    """The provider's immutable id (Linear issue UUID, Jira issue id, GitHub issue id); webhooks carry it."""
    key: str
    """What people call it (ENG-42, WEB-42, owner/repo#42); it changes when the issue moves."""
    url: str


class IssueClient(Protocol):
    """One provider's issue API, configured for one project."""

    async def create(self, issue: NewIssue) -> CreatedIssue:
        """File the issue; ProviderError when it was not (or may not have been) filed."""
        ...

    async def find(self, issue: NewIssue, since: datetime) -> CreatedIssue | None:
        """The issue an earlier attempt filed for this interaction since `since`, if the provider shows one."""
        ...


def one_line(value: str, limit: int = MAX_TITLE) -> str:
    """Whitespace collapsed and cut to `limit` characters (an ellipsis marks the cut)."""
    flat = " ".join(value.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def compose(row: Any, dashboard_url: str) -> NewIssue:
    """The issue to file for an interaction row: title from its title, first line or AI summary; its words; facts.

    The user's own words come before the AI summary so the title does not depend on whether enrichment
    (another job, running concurrently) has finished yet.

    `row` carries the interaction's id, project_id, type, severity, tags,
    ai_labels, ai_summary, content (JSON) and content_text.
    """
    content: dict[str, Any] = row["content"] or {}
    text = (row["content_text"] or "").strip()
    first = next((line for line in text.splitlines() if line.strip()), "")
    title = next((one_line(v) for v in (content.get("title"), first, row["ai_summary"])
                  if isinstance(v, str) and v.strip()), "")
    if not title:
        title = f"{str(row['type']).capitalize()} report {str(row['id'])[:8]}"
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "…"
    facts = [("Type", str(row["type"]))]
    if row["severity"]:
        facts.append(("Severity", str(row["severity"])))
    if row["tags"]:
        facts.append(("Tags", ", ".join(row["tags"])))
    if row["ai_labels"]:
        facts.append(("Labels", ", ".join(row["ai_labels"])))
    facts.append(("Reported", row["created_at"].isoformat(timespec="seconds")))
    link = (f"{dashboard_url.rstrip('/')}/projects/{row['project_id']}/interactions/{row['id']}"
            if dashboard_url else None)
    return NewIssue(project_id=row["project_id"], interaction_id=row["id"], title=title, text=text,
                    facts=tuple(facts), link=link)


async def send(http: httpx.AsyncClient, policy: netguard.Policy, method: str, url: str, *,
               headers: dict[str, str], json: Any = None, params: dict[str, str] | None = None,
               doing: str) -> httpx.Response:
    """One request to a provider, pinned to an address the SSRF guard vetted just now.

    The URL's host is replaced by the vetted address; the Host header and TLS
    server name (SNI and certificate check) stay the configured name. The
    connection is not kept for reuse, so no later call to another name on the
    same address rides on a certificate checked for this one. Network failures
    become retryable ProviderErrors; `doing` names the call in their message.
    """
    try:
        dest = await netguard.check_url(url, policy)
    except netguard.Refused as exc:
        raise ProviderError(f"{doing}: destination refused ({exc})", retry=False) from exc
    target = httpx.URL(url)
    default_port = 443 if dest.scheme == "https" else 80
    name = f"[{dest.host}]" if ":" in dest.host else dest.host
    host_header = name if dest.port == default_port else f"{name}:{dest.port}"
    extensions = {"sni_hostname": dest.host} if dest.scheme == "https" else {}
    request = http.build_request(
        method, target.copy_with(host=str(dest.addresses[0])), params=params, json=json,
        headers={"Host": host_header, "User-Agent": USER_AGENT, "Connection": "close", **headers},
        extensions=extensions)
    try:
        return await http.send(request)
    except httpx.HTTPError as exc:
        raise ProviderError(f"{doing}: {type(exc).__name__}", retry=True) from exc


def check(response: httpx.Response, doing: str, *, ok: tuple[int, ...] = (200, 201)) -> Any:
    """The JSON body of a successful answer, else a ProviderError retryable for 408, 409, 425, 429 and 5xx."""
    if response.status_code not in ok:
        retry = response.status_code in (408, 409, 425, 429) or response.status_code >= 500
        raise ProviderError(f"{doing}: HTTP {response.status_code}", retry=retry)
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderError(f"{doing}: the answer is not JSON", retry=True) from exc
