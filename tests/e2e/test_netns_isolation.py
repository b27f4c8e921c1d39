"""Isolation you can see: each region's cell and stores in their own network namespace.

The test builds two namespaces joined to the host (where the router runs) by veth pairs and routes
nothing between them. An eu-west process then cannot even open a connection to us-west's Postgres,
Redis or cell API, while the router reaches both cells and serves both regions. Needs root and
`ip netns` (iproute2); skipped with the reason otherwise. The addresses are this test's own hosts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from relay.devstack import DevStack
from relay.embedded import RedisServer
from tests.conftest import Admin, sql
from tests.services import StorePostgres, redis_server

SUBNETS = {"us-west": "10.213.1", "eu-west": "10.213.2"}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _namespaces_available() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"relay-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"cannot create network namespaces here: {exc.stderr.decode().strip()}"
    _ip("netns", "del", probe)
    return None


@pytest.fixture(scope="module")
def isolated(pg: StorePostgres, scratch: Path) -> Iterator[tuple[DevStack, dict[str, str]]]:
    reason = _namespaces_available()
    if reason:
        pytest.skip(reason)
    tag = secrets.token_hex(2)
    names = {region: f"relay-{region[:2]}-{tag}" for region in SUBNETS}
    made: list[str] = []
    redis: list[RedisServer] = []
    dev: DevStack | None = None
    try:
        for region, ns in names.items():
            net, host_if, ns_if = SUBNETS[region], f"rv{region[:2]}{tag}h", f"rv{region[:2]}{tag}n"
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", ns)
            _ip("addr", "add", f"{net}.1/24", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", ns_if)
            _ip("-n", ns, "link", "set", ns_if, "up")
            _ip("-n", ns, "link", "set", "lo", "up")  # no default route: only its own /24 is reachable
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env["RELAY_ROUTER_DATABASE_URL"] = pg.database("netns_router")
        redis.append(redis_server(scratch / "netns", "router"))
        env["RELAY_ROUTER_REDIS_URL"] = redis[-1].url
        dev = DevStack(scratch / "netns" / "state", port=0, environ=env, log_dir=scratch / "netns" / "logs",
                       netns={r: (ns, f"{SUBNETS[r]}.2") for r, ns in names.items()},
                       router_env={"RELAY_DB_POOL_SIZE": "4"}, cell_env={"RELAY_DB_POOL_SIZE": "4"})
        dev.start()
        yield dev, names
    finally:
        if dev is not None:
            dev.stop()
        for server in redis:
            server.stop()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)  # veths go with it


def _connects_from(ns: str, url: str) -> bool:
    """Whether a process inside namespace `ns` can open a TCP connection to the host:port of `url`."""
    parsed = urlparse(url)
    code = (f"import socket; socket.create_connection(({parsed.hostname!r}, {parsed.port}), timeout=2).close()")
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True,
                          timeout=30).returncode == 0


def test_one_region_cannot_reach_the_others_stores(isolated: tuple[DevStack, dict[str, str]]) -> None:
    dev, names = isolated
    us, eu = dev.topology["cells"]["us-west"], dev.topology["cells"]["eu-west"]
    assert urlparse(us["database_url"]).hostname == "10.213.1.2"
    # The probe works: each namespace reaches its own stores and API …
    for ns, cell in ((names["eu-west"], eu), (names["us-west"], us)):
        assert _connects_from(ns, cell["database_url"]) and _connects_from(ns, cell["redis_url"])
        assert _connects_from(ns, cell["url"])
    # … and never the other region's.
    for ns, other in ((names["eu-west"], us), (names["us-west"], eu)):
        for url in (other["database_url"], other["redis_url"], other["url"]):
            assert not _connects_from(ns, url), (ns, url)
    # The router, on the host, reaches both cells and serves both regions end to end.
    with httpx.Client(base_url=dev.topology["router"]["url"], timeout=30, trust_env=False) as router:
        admin = Admin(router)
        for region, cell in (("us-west", us), ("eu-west", eu)):
            project = admin.project(region)
            key = admin.key(project, ["ingest"])
            text = f"netns {region} {secrets.token_hex(4)}"
            body = {"type": "bug", "content": {"text": text}}
            r = router.post("/v1/ingest/interactions", headers=key["h"], json=body)
            assert r.status_code == 201 and r.headers["x-relay-region"] == region
            assert sql(cell["database_url"], "SELECT 1 FROM interactions WHERE content_text = $1", text)
