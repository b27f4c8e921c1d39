"""The cell's settings, from `RELAY_*` environment variables, validated at start."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from cell import secrets
from common.mail import DEFAULT_FROM, check_settings
from common.settings import DEFAULT_REGIONS, SettingsError, check_pepper, check_regions, check_secret, load


class CellSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a cell process needs; one instance per process."""

    region: str
    """This cell's region, e.g. `eu-west` (RELAY_REGION)."""
    database_url: str
    """The region's own Postgres (RELAY_DATABASE_URL)."""
    redis_url: str
    """The region's own Redis: queue, caches, pub/sub (RELAY_REDIS_URL)."""
    object_store: str
    """`file:///dir` or `s3://bucket/prefix` for media, replay chunks, exports (RELAY_OBJECT_STORE)."""
    hop_secret: str
    """Secret shared with the router for signing the internal hop (RELAY_HOP_SECRET)."""
    secret_key: str
    """This cell's key for secrets at rest (integration tokens, webhook secrets): 32+ random characters,
    never shared with another region; or a key ring, `v2:<new>,v1:<old>` newest first (cell/secrets.py)
    (RELAY_SECRET_KEY)."""
    key_pepper: str
    """The deployment's key pepper: API keys are stored as HMAC-SHA256 of the key under it. The same value in
    every region and the router, so a key keeps verifying after its project moves; 32+ random characters
    (RELAY_KEY_PEPPER)."""
    regions: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_REGIONS))
    """All regions and their key tags, to tell a misdirected caller where to go (RELAY_REGIONS)."""
    host: str = "127.0.0.1"
    """Interface to listen on (RELAY_HOST)."""
    port: int = 8101
    """Port to listen on (RELAY_PORT)."""
    tls_cert_file: str = ""
    """PEM certificate chain: with `tls_key_file`, the API serves only HTTPS, so the router's hop is
    encrypted and the router checks who answers (RELAY_TLS_CERT_FILE; in Kubernetes, the Secret
    cert-manager keeps renewed, see infra/k8s)."""
    tls_key_file: str = ""
    """The certificate's private key, PEM (RELAY_TLS_KEY_FILE)."""
    db_pool_size: int = 20
    """Maximum Postgres connections per API process (RELAY_DB_POOL_SIZE)."""
    key_recheck_seconds: float = 1.0
    """How long a verified API key is trusted before its row is re-read, bounding revocation lag
    (RELAY_KEY_RECHECK_SECONDS)."""
    webhooks_allow_loopback: bool = False
    """Let webhook and integration destinations resolve to loopback addresses; `relay dev` sets it for local
    receivers, production never should (RELAY_WEBHOOKS_ALLOW_LOOPBACK)."""
    webhooks_allow_private: bool = False
    """Let webhook and integration destinations resolve to private addresses (10/8, 172.16/12, 192.168/16,
    100.64/10, fc00::/7), e.g. a self-hosted Jira; link-local, metadata, multicast and reserved addresses stay
    refused regardless (RELAY_WEBHOOKS_ALLOW_PRIVATE)."""
    egress_ports: list[Annotated[int, msgspec.Meta(ge=1, le=65535)]] = msgspec.field(default_factory=list)
    """The only ports the cell may call on a project's behalf (webhooks, integrations, SMTP), as a JSON list,
    e.g. `[80, 443, 465, 587]`; empty: any port. Deployments set it to what their network lets the worker
    reach (infra/k8s derives the worker's egress policy from the same list), so a destination the network
    would drop is refused with a 422 when it is configured, not lost at delivery (RELAY_EGRESS_PORTS)."""
    dashboard_url: str = ""
    """The dashboard's base URL, for the link back to an interaction in the issues filed from it in Linear,
    Jira or GitHub; empty: the issue names the interaction's id only (RELAY_DASHBOARD_URL)."""
    replay_idle_timeout_seconds: Annotated[int, msgspec.Meta(ge=1)] = 1800
    """A replay still recording with no chunk for this long is closed and processed as if its SDK had
    finished it (RELAY_REPLAY_IDLE_TIMEOUT_SECONDS)."""
    key_usage_interval_seconds: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0
    """`api_keys.last_used_at` is written at most this often per key by each API process, never once per
    request (RELAY_KEY_USAGE_INTERVAL_SECONDS)."""

    smtp_url: str = ""
    """The operator's SMTP server for the email this service sends, e.g. `smtp://user:password@mail.example.com:587`
    (STARTTLS required), `smtps://…:465` (TLS), `smtp+plain://…:25` (a trusted relay); empty: none (RELAY_SMTP_URL)."""
    mail_from: str = DEFAULT_FROM
    """The sender of that email (RELAY_MAIL_FROM)."""
    mail_dir: str = ""
    """With no SMTP server: a directory where each email is written as one `.eml` file instead (`relay dev` sets
    `DIR/mail/`); empty with no server: nothing is sent (RELAY_MAIL_DIR)."""

    scrub_threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    """Threads per API process that scrub large bodies off the event loop (RELAY_SCRUB_THREADS)."""
    scrub_budget_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    """Time one request's scrubbing may take before it is refused with 503 (RELAY_SCRUB_BUDGET_SECONDS)."""
    scrub_budget_chars: Annotated[int, msgspec.Meta(ge=1024)] = 8 * 1024 * 1024
    """Characters a project's custom regexes may scan for one request (each rule scans each text once)
    before it is refused with 413 (RELAY_SCRUB_BUDGET_CHARS)."""

    ai_provider: Literal["local", "openai"] = "local"
    """Who enriches this cell's interactions (summaries, labels, duplicate groups): `local`, in the worker
    with no network, or `openai`, an OpenAI-compatible endpoint; set per cell, so a region's text only goes
    to the endpoint configured for that region (RELAY_AI_PROVIDER)."""
    ai_endpoint: str = ""
    """Base URL of the OpenAI-compatible API, e.g. `https://eu.example.com/v1`; https unless on loopback
    (RELAY_AI_ENDPOINT)."""
    ai_api_key: str = ""
    """Bearer token for the endpoint (RELAY_AI_API_KEY)."""
    ai_model: str = ""
    """Chat model for summaries and labels; empty: the local ones (RELAY_AI_MODEL)."""
    ai_embedding_model: str = ""
    """Embedding model for duplicate similarity; empty: local TF-IDF similarity (RELAY_AI_EMBEDDING_MODEL)."""
    ai_embedding_threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.85
    """Cosine similarity of two embeddings from which the interactions are duplicates
    (RELAY_AI_EMBEDDING_THRESHOLD)."""
    ai_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    """Time budget of one call to the endpoint (RELAY_AI_TIMEOUT_SECONDS)."""

    def __post_init__(self) -> None:
        check_settings(self.smtp_url, self.mail_from, self.mail_dir)
        check_regions(self.regions)
        if self.region not in self.regions:
            raise SettingsError(f"RELAY_REGION: {self.region!r} is not one of RELAY_REGIONS {sorted(self.regions)}")
        check_secret("RELAY_HOP_SECRET", self.hop_secret)
        check_pepper("RELAY_KEY_PEPPER", self.key_pepper)
        try:
            secrets.ring(self.secret_key)
        except ValueError as exc:
            raise SettingsError(f"RELAY_SECRET_KEY: {exc}") from None
        if not self.object_store.startswith(("file://", "s3://", "memory://")):
            raise SettingsError("RELAY_OBJECT_STORE: must be a file://, s3:// or memory:// URL")
        if self.dashboard_url and not self.dashboard_url.startswith(("https://", "http://")):
            raise SettingsError("RELAY_DASHBOARD_URL: must be an http(s) URL or empty")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError("RELAY_TLS_CERT_FILE: set together with RELAY_TLS_KEY_FILE, or neither")
        if not 1 <= self.db_pool_size <= 500:
            raise SettingsError("RELAY_DB_POOL_SIZE: must be between 1 and 500")
        if self.ai_provider == "openai":
            check_ai_endpoint(self.ai_endpoint)
            if not (self.ai_model or self.ai_embedding_model):
                raise SettingsError("RELAY_AI_MODEL: the openai provider needs a chat model, an embedding model "
                                    "(RELAY_AI_EMBEDDING_MODEL) or both")

    @property
    def tls(self) -> tuple[str, str] | None:
        """(certificate, key) when the API serves HTTPS."""
        return (self.tls_cert_file, self.tls_key_file) if self.tls_cert_file else None

    @property
    def tag(self) -> str:
        """This region's key tag."""
        return self.regions[self.region]


def check_ai_endpoint(url: str) -> None:
    """The AI endpoint is an http(s) base URL; plain http only to this machine (a local model server)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SettingsError("RELAY_AI_ENDPOINT: must be an https URL, e.g. https://eu.example.com/v1")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SettingsError("RELAY_AI_ENDPOINT: must use https unless it is on loopback")


def from_env() -> CellSettings:
    """Read and validate the cell settings from the environment."""
    return load(CellSettings)
