"""Session fixtures: real stores and the whole topology (router + two cells + workers) over real HTTP."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from relay.devstack import DevStack
from relay.embedded import RedisServer
from tests import mailbox
from tests.services import StorePostgres, redis_server

REGIONS = ("us-west", "eu-west")
T = TypeVar("T")


def until(check: Callable[[], T | None], timeout: float = 60.0, what: str = "condition", *,
          every: float = 0.2) -> T:
    """Poll `check` until it returns something truthy (what another process makes true: a worker's job, an
    exported span, a cell's clean-up) and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(every)


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("relay")


@pytest.fixture(scope="session")
def pg(scratch: Path) -> Iterator[StorePostgres]:
    server = StorePostgres(scratch)
    yield server
    server.close()


class Stack:
    """A running topology plus the throwaway stores it owns."""

    def __init__(self, pg: StorePostgres, scratch: Path, name: str, *, own_control_db: bool = False,
                 router_env: dict[str, str] | None = None, cell_urls: dict[str, str] | None = None,
                 port: int = 0, cell_env: dict[str, str] | None = None,
                 cell_ports: dict[str, int] | None = None, cell_tls: tuple[Path, Path, Path] | None = None,
                 router_ca: Path | None = None) -> None:
        self.redis: dict[str, RedisServer] = {}
        env: dict[str, str] = {}
        if not own_control_db:  # else relay dev starts an embedded Postgres the test may stop
            env["RELAY_ROUTER_DATABASE_URL"] = pg.database(f"{name}_router")
        for store in ("router", *REGIONS):
            var = store.upper().replace("-", "_")
            self.redis[store] = redis_server(scratch / name, store)
            env[f"RELAY_{var}_REDIS_URL"] = self.redis[store].url
            if store != "router":
                env[f"RELAY_{var}_DATABASE_URL"] = pg.database(f"{name}_{store}")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")} | env
        self.dev = DevStack(scratch / name / "state", port=port, environ=environ, log_dir=scratch / name / "logs",
                            trace_dir=scratch / name / "traces",
                            router_env={"RELAY_DB_POOL_SIZE": "6", **(router_env or {})},
                            cell_env={"RELAY_DB_POOL_SIZE": "8", **(cell_env or {})}, cell_urls=cell_urls or {},
                            cell_ports=cell_ports or {}, cell_tls=cell_tls, router_cell_ca=router_ca)
        try:
            self.dev.start()
        except BaseException:
            self.close()
            raise
        mailbox.register(self.dev.topology["router"]["url"], self.dev.state_dir / "mail")

    def close(self) -> None:
        self.dev.stop()
        for server in self.redis.values():
            server.stop()


@pytest.fixture(scope="session")
def stack(pg: StorePostgres, scratch: Path) -> Iterator[DevStack]:
    """The topology `relay dev` runs, pointed at this run's databases and Redis servers."""
    # The router trusts loopback as a proxy: a test acts as many clients by sending X-Forwarded-For. The
    # per-client limits on failures and signups are loose here, so that the 401s and accounts of one test
    # never spend another's budget, and so is the per-account management budget, which a test that races
    # 160 calls from eight threads (tests/e2e/test_group_demand.py) can spend in a second on a fast machine;
    # tests/e2e/test_edge.py and test_router_faults.py hold them to tight ones on stacks of their own.
    loose = ('{"bad_credentials": "10000/minute", "bad_sessions": "10000/minute", "signup_client": "10000/minute",'
             ' "management": "10000/second"}')
    running = Stack(pg, scratch, "main", router_env={"RELAY_TRUSTED_PROXIES": '["127.0.0.1/32"]',
                                                     "RELAY_RATE_LIMITS": loose})
    yield running.dev
    running.close()


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

    def member(self, project: dict[str, Any], role: str) -> Admin:
        """A new dashboard user, invited to `project` by this one with `role`, who accepted (from the mail)."""
        user = Admin(self.router)
        self.invite(project, user, role)
        return user

    def invite(self, project: dict[str, Any], user: Admin, role: str) -> dict[str, Any]:
        """Invite an existing account to `project` and accept as them with the emailed token; the membership."""
        before = len(mailbox.messages(mailbox.directory_of(self.router), user.email))
        r = self.router.post(f"/v1/projects/{project['id']}/members", json={"email": user.email, "role": role},
                             headers=self.h)
        assert r.status_code == 201 and r.json()["status"] == "invited" and r.json()["role"] == role, r.text
        joined = mailbox.accept_invitation(self.router, user, before + 1)
        assert joined["role"] == role and joined["project_id"] == project["id"], joined
        return joined

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


def project_secret(topo: dict[str, Any], region: str, project_id: str) -> bytes:
    """A project's secret (conversation tokens, ip_hash) as an auditor recomputes them: it is sealed at rest,
    so it is opened with the region's key from the `relay dev` state dir."""
    import json

    from cell.projects.secret import project_secret as opened

    state = Path(topo["cells"][region]["object_store"][len("file://"):]).parent.parent
    ring = str(json.loads((state / "secrets.json").read_text())[f"{region}:secret_key"])

    async def read() -> bytes | None:
        conn = await asyncpg.connect(topo["cells"][region]["database_url"])
        try:
            return await opened(conn, ring, uuid.UUID(project_id))
        finally:
            await conn.close()

    secret = asyncio.run(read())
    assert secret is not None
    return secret
