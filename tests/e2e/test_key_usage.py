"""`last_used_at` of API keys through the router: it moves when a key is used, and is written once per
minute per key and cell process however many requests the key makes (cell.keys.usage)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import Admin, sql, until


def _listed(router: httpx.Client, admin: Admin, project: dict[str, Any], key: dict[str, Any]) -> str | None:
    keys = router.get(f"/v1/projects/{project['id']}/api-keys", headers=admin.h).json()["data"]
    at: str | None = next(k for k in keys if k["id"] == key["id"]).get("last_used_at")  # omitted while null
    return at


def test_last_used_at_moves_and_is_coalesced(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    ingest, idle = admin.key(project, ["ingest"]), admin.key(project, ["read"])
    assert _listed(router, admin, project, ingest) is None
    before = time.time()
    r = router.post("/v1/ingest/interactions", headers=ingest["h"], json={"type": "bug", "content": {"text": "1"}})
    assert r.status_code == 201
    first = until(lambda: _listed(router, admin, project, ingest), 10, "last_used_at written")
    assert datetime.fromisoformat(first).timestamp() >= before - 1
    assert _listed(router, admin, project, idle) is None  # only the key that was used

    # Many more requests within the minute: not a write per request, the first use stands.
    dsn = topo["cells"]["eu-west"]["database_url"]
    [row] = sql(dsn, "SELECT last_used_at, xmin::text AS version FROM api_keys WHERE id = $1::uuid", ingest["id"])
    for i in range(20):
        assert router.post("/v1/ingest/interactions", headers=ingest["h"],
                           json={"type": "bug", "content": {"text": f"more {i}"}}).status_code == 201
    time.sleep(1.5)  # longer than the recorder's flush period
    [again] = sql(dsn, "SELECT last_used_at, xmin::text AS version FROM api_keys WHERE id = $1::uuid", ingest["id"])
    assert again["last_used_at"] == row["last_used_at"] and again["version"] == row["version"]  # not even rewritten
    assert _listed(router, admin, project, ingest) == first
