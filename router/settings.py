"""The router's settings, from `RELAY_*` environment variables, validated at start."""

from __future__ import annotations

import msgspec
from limits import parse

from common.mail import DEFAULT_FROM, check_settings
from common.netaddr import networks
from common.origins import web_origin
from common.settings import CellEndpoint, SettingsError, check_pepper, check_regions, check_secret, load
from router.ratelimit import DEFAULT_LIMITS


class RouterSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a router process needs."""

    database_url: str
    """The control database: admin users, memberships, project and key directories (RELAY_DATABASE_URL)."""
    redis_url: str
    """The router's Redis: directory change notifications and rate-limit counters (RELAY_REDIS_URL)."""
    cells: dict[str, CellEndpoint]
    """Regions and how to reach their cells, as JSON: {"eu-west": {"url", "tag", "hop_secret"}} (RELAY_CELLS)."""
    key_pepper: str
    """The deployment's key pepper: API keys are stored as HMAC-SHA256 of the key under it, here and in every
    cell (the same value everywhere, so a key keeps verifying after its project moves); 32+ random characters
    (RELAY_KEY_PEPPER)."""
    host: str = "127.0.0.1"
    """Interface to listen on (RELAY_HOST)."""
    port: int = 8000
    """Port to listen on (RELAY_PORT)."""
    db_pool_size: int = 20
    """Maximum control-DB connections per router process (RELAY_DB_POOL_SIZE)."""
    session_ttl_seconds: int = 14 * 24 * 3600
    """How long an admin session lasts (RELAY_SESSION_TTL_SECONDS)."""
    cell_concurrency: int = 512
    """Requests in flight to one cell before its callers get 503 (RELAY_CELL_CONCURRENCY)."""
    directory_snapshot: str = ""
    """File where the routing map is saved, to start routing even with the control DB down
    (RELAY_DIRECTORY_SNAPSHOT; empty: no snapshot)."""
    rate_limits: dict[str, str] = msgspec.field(default_factory=dict)
    """Overrides of the router's rate limits, e.g. {"ingest": "600/second", "login_account": "10/15minutes"}
    (RELAY_RATE_LIMITS; categories: the keys of `router.ratelimit.DEFAULT_LIMITS`)."""
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    """Load balancers and proxies in front of the router, as CIDRs, e.g. ["10.0.0.0/8"]: `X-Forwarded-For`
    is believed only from them, and the client is its rightmost address not among them; empty: the peer
    address is the client (RELAY_TRUSTED_PROXIES)."""
    regions_cache_seconds: float = 2.0
    """How long `GET /v1/regions` reuses the cells' health before asking them again
    (RELAY_REGIONS_CACHE_SECONDS)."""
    reconcile_seconds: float = 30.0
    """Period of the full reload of the directory from the control DB (RELAY_RECONCILE_SECONDS)."""
    public_url: str = ""
    """The router's address as people reach it, for links in the email it sends, e.g. `https://relay.example.com`
    (RELAY_PUBLIC_URL; empty: `http://{host}:{port}`). Never taken from a request's Host header."""
    password_reset_ttl_seconds: int = 3600
    """How long a password reset link works (RELAY_PASSWORD_RESET_TTL_SECONDS)."""

    smtp_url: str = ""
    """The operator's SMTP server for the email this service sends, e.g. `smtp://user:password@mail.example.com:587`
    (STARTTLS required), `smtps://…:465` (TLS), `smtp+plain://…:25` (a trusted relay); empty: none (RELAY_SMTP_URL)."""
    mail_from: str = DEFAULT_FROM
    """The sender of that email (RELAY_MAIL_FROM)."""
    mail_dir: str = ""
    """With no SMTP server: a directory where each email is written as one `.eml` file instead (`relay dev` sets
    `DIR/mail/`); empty with no server: nothing is sent (RELAY_MAIL_DIR)."""
    dashboard_origins: list[str] = msgspec.field(default_factory=list)
    """Origins whose pages may call the management API from a browser, as a JSON list:
    ["https://admin.example.com"] (RELAY_DASHBOARD_ORIGINS; the ingest paths are open to every origin)."""
    sdk_dir: str = ""
    """Directory of the built browser SDK served at /sdk/v1/ (RELAY_SDK_DIR; empty: sdk/js/dist of the
    checkout)."""
    cookie_secure: bool = True
    """Mark the dashboard's session cookie `Secure` (RELAY_COOKIE_SECURE; `relay dev` turns it off for plain
    http on localhost)."""

    def __post_init__(self) -> None:
        check_settings(self.smtp_url, self.mail_from, self.mail_dir)
        if not self.cells:
            raise SettingsError("RELAY_CELLS: at least one cell is needed")
        check_regions({region: cell.tag for region, cell in self.cells.items()})
        for region, cell in self.cells.items():
            check_secret(f"RELAY_CELLS[{region}].hop_secret", cell.hop_secret)
            if not cell.url.startswith(("http://", "https://")):
                raise SettingsError(f"RELAY_CELLS[{region}].url: must be an http(s) URL")
        for name, value in self.rate_limits.items():
            if name not in DEFAULT_LIMITS:
                raise SettingsError(f"RELAY_RATE_LIMITS: unknown category {name!r}")
            try:
                parse(value)
            except ValueError as exc:
                raise SettingsError(f"RELAY_RATE_LIMITS[{name}]: {exc}") from exc
        check_pepper("RELAY_KEY_PEPPER", self.key_pepper)
        try:
            networks(tuple(self.trusted_proxies))
        except ValueError as exc:
            raise SettingsError(f"RELAY_TRUSTED_PROXIES: {exc}") from exc
        if not 0 <= self.regions_cache_seconds <= 60:
            raise SettingsError("RELAY_REGIONS_CACHE_SECONDS: must be between 0 and 60")
        if self.cell_concurrency < 1:
            raise SettingsError("RELAY_CELL_CONCURRENCY: must be positive")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise SettingsError("RELAY_PUBLIC_URL: must be an http(s) URL")
        if not 60 <= self.password_reset_ttl_seconds <= 7 * 24 * 3600:
            raise SettingsError("RELAY_PASSWORD_RESET_TTL_SECONDS: between 60 seconds and 7 days")
        for origin in self.dashboard_origins:
            if web_origin(origin) != origin:
                raise SettingsError(f"RELAY_DASHBOARD_ORIGINS: {origin!r} is not an origin like https://host[:port]")


def link_base(settings: RouterSettings) -> str:
    """Where links in the router's email point: the configured public URL, else the address it listens on."""
    return (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")


def from_env() -> RouterSettings:
    """Read and validate the router settings from the environment."""
    return load(RouterSettings)
