"""Which requests the router proxies to a cell, and how: the one dispatch rule.

`router.app.RouterApp` routes by it, and the router's OpenAPI document (`router.openapi`) is built from
it, so the document says exactly which cell paths the router serves.
"""

from __future__ import annotations

from typing import Literal

CONTROL_SUBRESOURCES = frozenset({"members", "invitations", "move", "deletion", "audit-logs"})
"""Project subresources the router answers itself (with key writes: `POST`/`DELETE …/api-keys`)."""


def cell_route(path: str, method: str) -> Literal["ingest", "hooks", "management"] | None:
    """Which proxy path a request takes to a cell, or None for the router's own endpoints.

    The one dispatch rule: the router's OpenAPI document (router/openapi.py) is built from it too.
    """
    if path.startswith("/v1/ingest/"):
        return "ingest"
    if path.startswith("/v1/hooks/"):
        return "hooks"
    if path.startswith("/v1/projects/"):
        rest = path[len("/v1/projects/"):].partition("/")[2]
        sub = rest.partition("/")[0]
        if rest and sub not in CONTROL_SUBRESOURCES and not (sub == "api-keys" and method.upper() != "GET"):
            return "management"
    return None
