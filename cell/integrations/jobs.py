"""Worker jobs of the integrations area: file an interaction as an issue in Linear, Jira or GitHub.

`integration.create_issue` {project_id, interaction_id, provider} runs at least
once and files at most one issue per (interaction, provider), as far as the
provider lets a client know:

- One attempt at a time: the job holds a Postgres advisory lock on
  (project, interaction, provider) for its whole run, so concurrent requests
  and redelivered jobs queue behind each other and find the link made.
- Journal before and after the call: `integration_issue_requests.started_at`
  is committed before the provider is called, and the provider's id is
  committed as soon as it answers, before the interaction and its link row are
  written. A retry that finds the id links it without calling the provider;
  one that finds only `started_at` (the answer was lost: a timeout, a dropped
  connection, a crash, the database gone at that moment) asks the provider for
  the issue before filing another.
- Linear takes a client-chosen issue id, so that question has an exact
  answer. GitHub and Jira take no idempotency key: Relay looks for its marker
  line among the repository's recently updated issues (GitHub, newest 100) or
  the project's recent issues (Jira, JQL search, which is eventually
  consistent). Residual risk: if the answer is lost and the retry comes before
  Jira's index shows the new issue, or after more than 100 GitHub issues
  changed, a second issue is filed.

Failures that a retry cannot fix (no enabled integration, a secret that does
not open, a refused token or field) are recorded in `last_error` and end the
job; the others are recorded and raised so the queue retries them.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

import asyncpg
import httpx

from cell import netguard
from cell.integrations.issues import CREATE_ISSUE, ISSUE_PROVIDERS, existing_link, link_issue
from cell.integrations.providers import IssueClient, ProviderError, compose
from cell.integrations.providers.github import GithubClient
from cell.integrations.providers.jira import JiraClient
from cell.integrations.providers.linear import LinearClient
from cell.integrations.queries import load_integration, mark_synced
from cell.integrations.types import GithubConfig, JiraConfig, LinearConfig, ProviderConfig
from cell.jobs import Job
from cell.secrets import SecretError
from cell.settings import CellSettings

log = logging.getLogger("relay.integrations")

INTERACTION = """SELECT id, project_id, type::text AS type, severity::text AS severity, tags, ai_labels, ai_summary,
                        content_json AS content, content_text, created_at
                   FROM interactions WHERE project_id = $1 AND id = $2"""


def client_for(config: ProviderConfig, http: httpx.AsyncClient, policy: netguard.Policy) -> IssueClient:
    """The issue API client for a provider's config."""
    if isinstance(config, LinearConfig):
        return LinearClient(http, config, policy)
    if isinstance(config, JiraConfig):
        return JiraClient(http, config, policy)
    if isinstance(config, GithubConfig):
        return GithubClient(http, config, policy)
    raise ProviderError(f"{type(config).__name__} files no issues", retry=False)


class _Failed(Exception):
    """The attempt failed for a reason recorded in `last_error`; `retry` as in ProviderError."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


async def create_issue(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """File the interaction as an issue with the provider and link it; nothing if it is already filed there."""
    pool: asyncpg.Pool = ctx["pool"]
    provider = payload.get("provider")
    if provider not in ISSUE_PROVIDERS:
        log.warning("integration.create_issue: unknown provider %r; dropped", provider)
        return
    interaction_id = uuid.UUID(str(payload["interaction_id"]))
    project_id = (uuid.UUID(str(payload["project_id"])) if payload.get("project_id")
                  else await pool.fetchval("SELECT project_id FROM interactions WHERE id = $1", interaction_id))
    if project_id is None:
        return  # the interaction is gone (erased)
    lock = f"integration.create_issue:{project_id}:{interaction_id}:{provider}"
    async with pool.acquire() as conn:
        # Released explicitly below, and by the pool's reset (pg_advisory_unlock_all) if this task is cancelled.
        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock)
        try:
            await _file(conn, ctx["settings"], ctx["http"], project_id, interaction_id, provider)
        except _Failed as exc:
            await conn.execute(
                """UPDATE integration_issue_requests SET last_error = $4
                    WHERE project_id = $1 AND interaction_id = $2 AND provider = $3""",
                project_id, interaction_id, provider, str(exc)[:500])
            if exc.retry:
                raise
            log.warning("integration.create_issue %s %s: %s (not retried)", provider, interaction_id, exc)
        finally:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock)


async def _file(conn: asyncpg.Connection, settings: CellSettings, http: httpx.AsyncClient,
                project_id: uuid.UUID, interaction_id: uuid.UUID, provider: str) -> None:
    row = await conn.fetchrow(INTERACTION, project_id, interaction_id)
    if row is None:
        return
    if await existing_link(conn, project_id, interaction_id, provider) is not None:
        await conn.execute(
            """UPDATE integration_issue_requests SET completed_at = coalesce(completed_at, now()), last_error = NULL
                WHERE project_id = $1 AND interaction_id = $2 AND provider = $3""",
            project_id, interaction_id, provider)
        return
    journal = await conn.fetchrow(
        """INSERT INTO integration_issue_requests (project_id, interaction_id, provider) VALUES ($1, $2, $3)
           ON CONFLICT (project_id, interaction_id, provider) DO UPDATE SET provider = EXCLUDED.provider
           RETURNING started_at, external_id, external_url""", project_id, interaction_id, provider)
    external_id, external_url = journal["external_id"], journal["external_url"]
    key = external_id
    if external_id is None:
        try:
            config = await load_integration(conn, settings, project_id, provider)
        except SecretError as exc:
            raise _Failed(f"{provider}: a secret of the integration does not open", retry=False) from exc
        if config is None:
            raise _Failed(f"{provider}: no enabled integration", retry=False)
        issue = compose(row, settings.dashboard_url)
        try:
            client = client_for(config, http, netguard.Policy.of(settings))
            found = await client.find(issue, journal["started_at"]) if journal["started_at"] else None
            if found is None:
                await conn.execute(
                    """UPDATE integration_issue_requests SET started_at = coalesce(started_at, now())
                        WHERE project_id = $1 AND interaction_id = $2 AND provider = $3""",
                    project_id, interaction_id, provider)
                found = await client.create(issue)
            else:
                log.info("integration.create_issue %s %s: found the issue an earlier attempt filed",
                         provider, interaction_id)
        except ProviderError as exc:
            raise _Failed(str(exc), retry=exc.retry) from exc
        # The provider's id first, on its own: if what follows fails, the retry links this issue.
        await conn.execute(
            """UPDATE integration_issue_requests SET external_id = $4, external_url = $5
                WHERE project_id = $1 AND interaction_id = $2 AND provider = $3""",
            project_id, interaction_id, provider, found.external_id, found.url)
        external_id, external_url, key = found.external_id, found.url, found.key
    async with conn.transaction():
        if await link_issue(conn, project_id, interaction_id, provider, external_id, external_url, key):
            await mark_synced(conn, project_id, provider)


JOBS = [Job(CREATE_ISSUE, create_issue, timeout=60, retries=5, name="integrations.create_issue")]
