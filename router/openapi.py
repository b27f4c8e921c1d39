"""`GET /openapi.json`: one OpenAPI document for the whole public API, served by the router.

The router's own endpoints come from its Litestar app; the ingest, management and hook paths the cells
serve come from a cell's own generated document (fetched over the signed hop: the router never imports
the cell's code, and every cell runs the same code), keeping only the operations the router forwards
(`router.dispatch.cell_route`). Cell-internal paths (`/internal/…`) and the services' own health
endpoints are not public and are left out. The document is built once per router process, at its
first request, and kept.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from litestar import Request, get
from litestar.response import Response

from common.problems import Problem
from common.signing import Actor
from router.dispatch import cell_route
from router.state import state

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_SCHEMAS = "#/components/schemas/"
CELL_DOCUMENT = "/schema/openapi.json"
"""Where a cell's Litestar app serves its own document."""


def merge(router_doc: dict[str, Any], cell_doc: dict[str, Any]) -> dict[str, Any]:
    """The public document: the router's operations it answers itself, plus the cells' operations it forwards.

    A cell schema whose name the router already uses for a different schema is renamed `Cell<Name>`
    (and every reference to it in the cell's operations follows).
    """
    ours = router_doc.get("components", {}).get("schemas", {})
    theirs = cell_doc.get("components", {}).get("schemas", {})
    renamed = {name: f"Cell{name}" for name, schema in theirs.items() if name in ours and ours[name] != schema}
    text = json.dumps({"paths": cell_doc.get("paths", {}), "schemas": theirs})
    for old, new in renamed.items():
        text = text.replace(f'"{_SCHEMAS}{old}"', f'"{_SCHEMAS}{new}"')
    cell = json.loads(text)
    schemas = dict(ours)
    for name, schema in cell["schemas"].items():
        schemas.setdefault(renamed.get(name, name), schema)

    paths: dict[str, dict[str, Any]] = {}
    for source, proxied in ((router_doc.get("paths", {}), False), (cell["paths"], True)):
        for path, item in source.items():
            if proxied and not path.startswith("/v1/"):  # a cell's health and internal endpoints
                continue
            for method, operation in item.items():
                if method not in _METHODS:
                    continue
                if (cell_route(path, method) is not None) == proxied:
                    paths.setdefault(path, {})[method] = operation
    doc = dict(router_doc)
    doc["info"] = {**router_doc.get("info", {}), "title": "Relay",
                   "description": "The whole public API: the global router's endpoints and every ingest and "
                                  "management endpoint it forwards to the project's regional cell."}
    doc["paths"] = dict(sorted(paths.items()))
    doc["components"] = {**router_doc.get("components", {}), "schemas": dict(sorted(schemas.items())),
                         "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                        "description": "An API key (rk_…) or a session token (rs_…)"}}}
    doc["security"] = [{"bearer": []}]
    return doc


@get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The whole public API's OpenAPI document (503 until one cell has answered with its part)."""
    cached: bytes | None = getattr(request.app.state, "openapi_document", None)
    if cached is None:
        lock: asyncio.Lock = request.app.state.setdefault("openapi_lock", asyncio.Lock())
        async with lock:
            cached = getattr(request.app.state, "openapi_document", None)
            if cached is None:
                cached = json.dumps(merge(request.app.openapi_schema.to_schema(), await _cell_document(request)),
                                    separators=(",", ":")).encode()
                request.app.state.openapi_document = cached
    return Response(cached, media_type="application/json")


async def _cell_document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """A cell's own document: the first cell that answers (they all run the same code)."""
    cells = state(request).cells.by_region.values()
    for cell in cells:
        try:
            response = await cell.call("GET", CELL_DOCUMENT, Actor(kind="router"))
        except Problem:
            continue
        if response.status_code == 200:
            doc: dict[str, Any] = response.json()
            return doc
    raise Problem(503, "no region answered with its part of the API description", retry_after=5)


ROUTES = [openapi_json]
