"""Reading a service's settings from the environment, validated once at start.

Each service declares its settings as a msgspec Struct whose fields are read
from `RELAY_<FIELD>`; `load()` converts and validates them and turns any
problem into one `SettingsError` line, so a bad setting stops the process
before it serves a request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

T = TypeVar("T", bound=msgspec.Struct)

DEFAULT_REGIONS = {"us-west": "us", "eu-west": "eu"}
_REGION = re.compile(r"^[a-z]{2,}-[a-z0-9]+$")
_TAG = re.compile(r"^[a-z]{2}$")


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable."""


class CellEndpoint(msgspec.Struct, frozen=True):
    """How the router reaches one regional cell."""

    url: str
    """Base URL of the cell API, e.g. `http://127.0.0.1:8101`."""
    tag: str
    """Region tag used in key prefixes (`us` in `rk_us_…`)."""
    hop_secret: str
    """Shared secret for signing the router → cell hop."""
    ca_file: str = ""
    """For an `https://` url: the PEM bundle the cell's certificate is checked against (a private CA, e.g.
    cert-manager's); empty: the system's trust store."""


def load(cls: type[T], environ: Mapping[str, str] | None = None, prefix: str = "RELAY_") -> T:
    """Build `cls` from `RELAY_*` variables; JSON-looking values for structured fields are decoded."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        name = prefix + field.name.upper()
        if name in env:
            value: Any = env[name]
            if isinstance(value, str) and value[:1] in "{[":
                try:
                    value = msgspec.json.decode(value)
                except msgspec.DecodeError as exc:
                    raise SettingsError(f"{name}: not valid JSON ({exc})") from exc
            raw[field.name] = value
    try:
        return msgspec.convert(raw, type=cls, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = re.search(r"`\$\.([a-z_]+)", message) or re.search(r"field `([a-z_]+)`", message)
        var = prefix + match.group(1).upper() if match else prefix + "*"
        raise SettingsError(f"{var}: {message}") from exc


def check_regions(regions: Mapping[str, str]) -> None:
    """Region names look like `eu-west`, tags are two lowercase letters, and both are unique."""
    for region, tag in regions.items():
        if not _REGION.match(region):
            raise SettingsError(f"region name {region!r} must look like 'eu-west'")
        if not _TAG.match(tag):
            raise SettingsError(f"region tag {tag!r} for {region} must be two lowercase letters")
    if len(set(regions.values())) != len(regions):
        raise SettingsError("two regions share a key tag")


def check_secret(name: str, value: str) -> None:
    """Shared secrets must be long enough to resist guessing."""
    if len(value) < 16:
        raise SettingsError(f"{name}: must be at least 16 characters")


def check_pepper(name: str, value: str) -> None:
    """The key pepper keys every stored API key digest: long and random, like a signing key."""
    if len(value) < 32:
        raise SettingsError(f"{name}: must be at least 32 characters")
