"""Web origins as browsers send them in `Origin`: one spelling, so lists of allowed origins compare exactly.

The router checks the operator's dashboard origins and a cell checks a project's `allowed_origins` against
the `Origin` header; both hold origins in the form this module gives them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def web_origin(value: str) -> str | None:
    """`scheme://host[:port]` as a browser serializes it (lower case, no default port), or None when `value`
    is not an origin (a path, query, fragment or credentials, another scheme, no host)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or value.strip().endswith(("?", "#")):
        return None
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    scheme = parts.scheme.lower()
    return f"{scheme}://{host}" if port is None or port == _DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"
