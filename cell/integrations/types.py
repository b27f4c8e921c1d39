"""Integration configs per provider, and their stored form: secrets sealed, everything else plain.

Each provider's config is a Struct that names its secret fields. In
`integrations.config` a secret field holds the sealed value (`cell.secrets`,
bound to the project and to `integration:<provider>:<field>`); other fields are
stored as sent. A dashboard sees secrets masked to their last 4 characters, and
may send the masked value (or nothing) back to keep a stored secret unchanged,
so editing a team id never means pasting the token again.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, ClassVar, Literal

import msgspec

from cell import secrets

Provider = Literal["linear", "jira", "github", "slack", "email"]
PROVIDERS: tuple[Provider, ...] = ("linear", "jira", "github", "slack", "email")
MASK = "••••"
MAX_SECRET = 4096

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[?[0-9A-Fa-f:.]+\]?$")


def _text(value: str | None, field: str, limit: int = 255, *, required: bool = True) -> None:
    if value is None:
        if required:
            raise ValueError(f"{field} is required - at `$.{field}`")
        return
    if not 1 <= len(value) <= limit:
        raise ValueError(f"{field} must be 1 to {limit} characters - at `$.{field}`")


def _url(value: str, field: str) -> None:
    if not value.startswith(("https://", "http://")) or len(value) > 2048:
        raise ValueError(f"{field} must be an http(s) URL - at `$.{field}`")


class ProviderConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What every provider config shares: which fields are secrets and which are destinations."""

    SECRETS: ClassVar[tuple[str, ...]] = ()
    """Fields sealed at rest and masked when shown."""
    REQUIRED_SECRETS: ClassVar[tuple[str, ...]] = ()
    """Secrets the integration cannot work without."""
    URLS: ClassVar[tuple[str, ...]] = ()
    """URL fields the workers will call: vetted by the SSRF guard when set."""

    def _check_secrets(self) -> None:
        for name in self.SECRETS:
            value = getattr(self, name)
            if value is not None and not 1 <= len(value) <= MAX_SECRET:
                raise ValueError(f"{name} must be 1 to {MAX_SECRET} characters - at `$.{name}`")


class LinearConfig(ProviderConfig, kw_only=True, forbid_unknown_fields=True):
    """Linear: issues created with GraphQL `issueCreate` in one team."""

    SECRETS = ("api_key", "webhook_secret")
    REQUIRED_SECRETS = ("api_key",)
    URLS = ("api_url",)

    team_id: str
    api_key: str | None = None
    webhook_secret: str | None = None
    """Signing secret of Linear's webhooks, to verify status updates."""
    api_url: str = "https://api.linear.app/graphql"

    def __post_init__(self) -> None:
        self._check_secrets()
        _text(self.team_id, "team_id", 100)
        _url(self.api_url, "api_url")


class JiraConfig(ProviderConfig, kw_only=True, forbid_unknown_fields=True):
    """Jira Cloud: issues created with REST v3 `POST /rest/api/3/issue`, basic auth email + API token."""

    SECRETS = ("api_token", "webhook_secret")
    REQUIRED_SECRETS = ("api_token",)
    URLS = ("base_url",)

    base_url: str
    email: str
    project_key: str
    api_token: str | None = None
    issue_type: str = "Bug"
    webhook_secret: str | None = None

    def __post_init__(self) -> None:
        self._check_secrets()
        _url(self.base_url, "base_url")
        if not _EMAIL.match(self.email) or len(self.email) > 255:
            raise ValueError("email is not an email address - at `$.email`")
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,49}", self.project_key):
            raise ValueError("project_key is a Jira project key such as `WEB` - at `$.project_key`")
        _text(self.issue_type, "issue_type", 100)


class GithubConfig(ProviderConfig, kw_only=True, forbid_unknown_fields=True):
    """GitHub: issues created with REST `POST /repos/{owner}/{repo}/issues`."""

    SECRETS = ("token", "webhook_secret")
    REQUIRED_SECRETS = ("token",)
    URLS = ("api_url",)

    owner: str
    repo: str
    token: str | None = None
    webhook_secret: str | None = None
    """Secret of the repository webhook (X-Hub-Signature-256), to verify status updates."""
    api_url: str = "https://api.github.com"

    def __post_init__(self) -> None:
        self._check_secrets()
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})", self.owner):
            raise ValueError("owner is a GitHub user or organisation name - at `$.owner`")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", self.repo):
            raise ValueError("repo is a GitHub repository name - at `$.repo`")
        _url(self.api_url, "api_url")


class SlackConfig(ProviderConfig, kw_only=True, forbid_unknown_fields=True):
    """Slack: notifications posted to an incoming webhook, whose URL is itself the credential."""

    SECRETS = ("webhook_url",)
    REQUIRED_SECRETS = ("webhook_url",)
    URLS = ("webhook_url",)

    webhook_url: str | None = None
    channel: str | None = None

    def __post_init__(self) -> None:
        self._check_secrets()
        if self.webhook_url is not None and not self.webhook_url.startswith(MASK):
            _url(self.webhook_url, "webhook_url")
        _text(self.channel, "channel", 100, required=False)


class EmailConfig(ProviderConfig, kw_only=True, forbid_unknown_fields=True):
    """Email notifications over SMTP."""

    SECRETS = ("password",)

    host: str
    from_address: str = msgspec.field(name="from")
    to: list[str]
    port: int = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        self._check_secrets()
        if not _HOST.match(self.host):
            raise ValueError("host is a host name or IP address - at `$.host`")
        if not 1 <= self.port <= 65535:
            raise ValueError("port must be between 1 and 65535 - at `$.port`")
        if not _EMAIL.match(self.from_address):
            raise ValueError("from is not an email address - at `$.from`")
        if not 1 <= len(self.to) <= 20:
            raise ValueError("to lists 1 to 20 addresses - at `$.to`")
        for i, address in enumerate(self.to):
            if not _EMAIL.match(address) or len(address) > 255:
                raise ValueError(f"not an email address - at `$.to[{i}]`")
        _text(self.username, "username", 255, required=False)


CONFIG_TYPES: dict[str, type[ProviderConfig]] = {
    "linear": LinearConfig, "jira": JiraConfig, "github": GithubConfig, "slack": SlackConfig, "email": EmailConfig,
}


class IntegrationIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PUT …/integrations/{provider}`: the whole config; secrets omitted or sent masked are kept."""

    config: dict[str, Any]
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class IntegrationPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PATCH …/integrations/{provider}`."""

    enabled: bool


class Integration(msgspec.Struct, kw_only=True):
    """An integration as the API shows it: secrets masked."""

    id: uuid.UUID
    provider: Provider
    enabled: bool
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_sync_at: datetime | None


def purpose(provider: str, field: str) -> str:
    """The associated-data label of one secret field: a value sealed for one field opens for no other."""
    return f"integration:{provider}:{field}"


def kept(value: object) -> bool:
    """Whether a sent secret means "leave the stored one alone": omitted, null, or its masked form."""
    return value is None or (isinstance(value, str) and value.startswith(MASK))


def seal(secret_key: str, project_id: uuid.UUID, provider: str, config: ProviderConfig,
         stored: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The stored form of `config` and the secret fields it changed; kept secrets come from `stored`.

    A required secret neither sent nor stored is a ValueError naming its field.
    """
    plain: dict[str, Any] = msgspec.to_builtins(config)
    out: dict[str, Any] = {}
    changed: list[str] = []
    for name in type(config).SECRETS:  # secret fields keep their Python name on the wire
        value = plain.pop(name, None)
        if not kept(value):
            out[name] = secrets.seal(secret_key, project_id, purpose(provider, name), value)
            changed.append(name)
        elif stored is not None and secrets.is_sealed(stored.get(name)):
            out[name] = stored[name]
        elif name in type(config).REQUIRED_SECRETS:
            raise ValueError(f"{name} is required - at `$.{name}`")
    return plain | out, sorted(changed)


def unseal(secret_key: str, project_id: uuid.UUID, provider: str, stored: dict[str, Any]) -> ProviderConfig:
    """The config with its secrets in plain text, for the workers that call the provider."""
    cls = CONFIG_TYPES[provider]
    opened = {k: secrets.unseal(secret_key, project_id, purpose(provider, k), v) if k in cls.SECRETS else v
              for k, v in stored.items()}
    return msgspec.convert(opened, cls)


def masked(secret_key: str, project_id: uuid.UUID, provider: str, stored: dict[str, Any]) -> dict[str, Any]:
    """The stored config as a dashboard may see it: each secret as `••••` and its last 4 characters."""
    cls = CONFIG_TYPES[provider]
    out = dict(stored)
    for name in cls.SECRETS:
        value = stored.get(name)
        if value is None:
            out[name] = None
            continue
        try:
            out[name] = secrets.mask(secrets.unseal(secret_key, project_id, purpose(provider, name), value))
        except secrets.SecretError:
            out[name] = MASK  # sealed under another key: show that one is set, never the ciphertext
    return out
