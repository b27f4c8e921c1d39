"""Integrations: per-project config for Linear, Jira, GitHub, Slack and email, tokens sealed at rest.

Workers reach a project's config with `load_integration` (secrets opened) and
record a successful call with `mark_synced`.
"""

from cell.integrations.queries import load_integration, mark_synced
from cell.integrations.types import (
    CONFIG_TYPES,
    EmailConfig,
    GithubConfig,
    JiraConfig,
    LinearConfig,
    ProviderConfig,
    SlackConfig,
)

__all__ = ["CONFIG_TYPES", "EmailConfig", "GithubConfig", "JiraConfig", "LinearConfig", "ProviderConfig",
           "SlackConfig", "load_integration", "mark_synced"]
