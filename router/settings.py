"""The router's settings, from `RELAY_*` environment variables, validated at start."""

from __future__ import annotations

import msgspec
from limits import parse

from common.settings import CellEndpoint, SettingsError, check_regions, check_secret, load
from router.ratelimit import DEFAULT_LIMITS


class RouterSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a router process needs."""

    database_url: str
    """The control database: admin users, memberships, project and key directories (RELAY_DATABASE_URL)."""
    redis_url: str
    """The router's Redis: directory change notifications and rate-limit counters (RELAY_REDIS_URL)."""
    cells: dict[str, CellEndpoint]
    """Regions and how to reach their cells, as JSON: {"eu-west": {"url", "tag", "hop_secret"}} (RELAY_CELLS)."""
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
    (RELAY_RATE_LIMITS; categories: ingest, uploads, management, bad_credentials, login_account, login_client)."""
    reconcile_seconds: float = 30.0
    """Period of the full reload of the directory from the control DB (RELAY_RECONCILE_SECONDS)."""
    cookie_secure: bool = True
    """Mark the dashboard's session cookie `Secure` (RELAY_COOKIE_SECURE; `relay dev` turns it off for plain
    http on localhost)."""

    def __post_init__(self) -> None:
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
        if self.cell_concurrency < 1:
            raise SettingsError("RELAY_CELL_CONCURRENCY: must be positive")


def from_env() -> RouterSettings:
    """Read and validate the router settings from the environment."""
    return load(RouterSettings)
