"""Adding a region is configuration, not code: `relay dev` with a third region routes to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.devstack import DevStack
from relay.embedded import RedisServer
from tests.conftest import Admin, sql
from tests.services import StorePostgres, redis_server

REGIONS = {"us-west": "us", "eu-west": "eu", "ap-south": "ap"}


@pytest.fixture(scope="module")
def three(pg: StorePostgres, scratch: Path) -> Iterator[DevStack]:
    redis: list[RedisServer] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_DEV_REGIONS"] = ",".join(f"{r}:{t}" for r, t in REGIONS.items())
    env["RELAY_ROUTER_DATABASE_URL"] = pg.database("three_router")
    redis.append(redis_server(scratch / "three", "router"))
    env["RELAY_ROUTER_REDIS_URL"] = redis[-1].url
    for region in REGIONS:
        var = region.upper().replace("-", "_")
        env[f"RELAY_{var}_DATABASE_URL"] = pg.database(f"three_{region}")
        redis.append(redis_server(scratch / "three", region))
        env[f"RELAY_{var}_REDIS_URL"] = redis[-1].url
    dev = DevStack(scratch / "three" / "state", port=0, environ=env, log_dir=scratch / "three" / "logs",
                   router_env={"RELAY_DB_POOL_SIZE": "4"}, cell_env={"RELAY_DB_POOL_SIZE": "4"})
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()
        for server in redis:
            server.stop()


def test_a_third_region_needs_only_configuration(three: DevStack) -> None:
    assert set(three.topology["cells"]) == set(REGIONS)
    with httpx.Client(base_url=three.topology["router"]["url"], timeout=30, trust_env=False) as router:
        regions = {r["name"]: r for r in router.get("/v1/regions").json()["data"]}
        assert regions["ap-south"]["status"] == "ok" and regions["ap-south"]["tag"] == "ap"
        admin = Admin(router)
        project = admin.project("ap-south")
        key = admin.key(project, ["ingest"])
        assert key["key"].startswith("rk_ap_")
        r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": {"text": "ap"}})
        assert r.status_code == 201 and r.headers["x-relay-region"] == "ap-south"
        listed = router.get(f"/v1/projects/{project['id']}/interactions", headers=admin.h).json()["data"]
        assert [i["id"] for i in listed] == [r.json()["id"]]
    rows = sql(three.topology["cells"]["ap-south"]["database_url"],
               "SELECT region::text AS region FROM projects WHERE id = $1::uuid", project["id"])
    assert rows[0]["region"] == "ap-south"
