"""Session fixtures: real stores and the whole topology (router + two cells + workers) over real HTTP."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from relay.devstack import DevStack
from relay.embedded import RedisServer
from tests.services import StorePostgres, redis_server

REGIONS = ("us-west", "eu-west")


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("relay")


@pytest.fixture(scope="session")
def pg(scratch: Path) -> Iterator[StorePostgres]:
    server = StorePostgres(scratch)
    yield server
    server.close()


@pytest.fixture(scope="session")
def stack(pg: StorePostgres, scratch: Path) -> Iterator[DevStack]:
    """The topology `relay dev` runs, pointed at this run's databases and Redis servers."""
    redises: list[RedisServer] = []
    env: dict[str, str] = {}
    env["RELAY_ROUTER_DATABASE_URL"] = pg.database("router")
    redises.append(redis_server(scratch, "router"))
    env["RELAY_ROUTER_REDIS_URL"] = redises[-1].url
    for region in REGIONS:
        var = region.upper().replace("-", "_")
        env[f"RELAY_{var}_DATABASE_URL"] = pg.database(region)
        redises.append(redis_server(scratch, region))
        env[f"RELAY_{var}_REDIS_URL"] = redises[-1].url
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")} | env
    dev = DevStack(scratch / "state", port=0, environ=environ, log_dir=scratch / "logs")
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()
        for server in redises:
            server.stop()


@pytest.fixture(scope="session")
def topo(stack: DevStack) -> dict[str, Any]:
    return stack.topology


@pytest.fixture(scope="session")
def router(topo: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=topo["router"]["url"], timeout=30, trust_env=False) as client:
        yield client


def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query against a store directly, as an auditor would."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


class Admin:
    """A signed-up dashboard user and the helpers a test needs to act as them."""

    def __init__(self, router: httpx.Client) -> None:
        self.router = router
        self.email = f"t-{secrets.token_hex(6)}@example.com"
        self.password = "correct horse battery staple"
        r = router.post("/v1/auth/signup", json={"email": self.email, "password": self.password, "name": "Test"})
        assert r.status_code == 201, r.text
        self.user = r.json()["user"]
        self.token = r.json()["token"]
        self.h = {"Authorization": f"Bearer {self.token}"}

    def project(self, region: str) -> dict[str, Any]:
        r = self.router.post("/v1/projects", json={"name": f"p {secrets.token_hex(3)}", "region": region},
                             headers=self.h)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def key(self, project: dict[str, Any], scopes: list[str]) -> dict[str, Any]:
        r = self.router.post(f"/v1/projects/{project['id']}/api-keys", json={"name": "k", "scopes": scopes},
                             headers=self.h)
        assert r.status_code == 201, r.text
        key = dict(r.json())
        key["h"] = {"Authorization": f"Bearer {key['key']}"}
        return key


@pytest.fixture(scope="session")
def admin(router: httpx.Client) -> Admin:
    return Admin(router)


def problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem response with this status and return its body."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers.get("content-type", "").startswith("application/problem+json"), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["title"] and body["type"], body
    return body
