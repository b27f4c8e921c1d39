"""The router under faults: one region's trouble never reaches the other, and routing outlives its stores.

These tests run their own topology (the router's control DB is an embedded Postgres they can stop, the
us-west cell sits behind a proxy that can slow it down, rate limits are tight) so that the faults they
inject disturb no other test.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.embedded import PostgresServer, free_port
from tests.conftest import Admin, Stack, problem
from tests.faults import DelayProxy, Load, post
from tests.services import StorePostgres

LIMITS = ('{"ingest": "40/second", "bad_credentials": "5/minute", "login_account": "3/15minutes",'
          ' "login_client": "1000/15minutes"}')


@pytest.fixture(scope="module")
def faulty(pg: StorePostgres, scratch: Path) -> Iterator[dict[str, Any]]:
    # The us-west cell listens on a port free right now (not one derived from another: a port next to a
    # free one may be some connection's local port, and the cell would fail to bind it), behind the proxy.
    cell_port = free_port()
    proxy = DelayProxy(cell_port)
    stack = Stack(pg, scratch, "faults", own_control_db=True, router_env={"RELAY_RATE_LIMITS": LIMITS},
                  cell_urls={"us-west": f"http://127.0.0.1:{proxy.port}"}, cell_ports={"us-west": cell_port})
    router = httpx.Client(base_url=stack.dev.topology["router"]["url"], timeout=30, trust_env=False)
    admin = Admin(router)
    projects = {r: admin.project(r) for r in ("us-west", "eu-west")}
    keys = {r: admin.key(p, ["ingest"]) for r, p in projects.items()}
    try:
        yield {"stack": stack, "router": router, "admin": admin, "keys": keys, "proxy": proxy,
               "projects": projects}
    finally:
        router.close()
        stack.close()
        proxy.close()


def test_rate_limits_are_shared_and_explained(faulty: dict[str, Any]) -> None:
    router: httpx.Client = faulty["router"]
    key = faulty["admin"].key(faulty["projects"]["eu-west"], ["ingest"])
    # 60 requests at once, 8 at a time: well inside one window even on a busy machine (one after another,
    # a slow run could spread them over two windows and never reach the limit).
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = [r for _, _, r in pool.map(lambda _: post(router, key), range(60))]
    codes = [r.status_code for r in answers]
    assert codes.count(201) >= 20 and 429 in codes, codes
    limited = next(r for r in answers if r.status_code == 429)
    problem(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-limit"] == "40" and "ratelimit-remaining" in limited.headers
    time.sleep(2.1)
    assert post(router, key)[0] == 201  # the window moved on
    # Repeated bad keys from one client: 401 a few times, then 429.
    bad = [router.post("/v1/ingest/interactions", headers={"Authorization": f"Bearer rk_eu_bad{i:03d}_" + "A" * 32},
                       json={"type": "bug", "content": {}}).status_code for i in range(8)]
    assert bad[:5] == [401] * 5 and bad[-1] == 429, bad


def test_login_is_throttled_per_account(faulty: dict[str, Any]) -> None:
    router: httpx.Client = faulty["router"]
    admin = Admin(router)
    for _ in range(3):
        problem(router.post("/v1/auth/login", json={"email": admin.email, "password": "not the password"}), 401)
    limited = router.post("/v1/auth/login", json={"email": admin.email, "password": admin.password})
    assert problem(limited, 429) and int(limited.headers["retry-after"]) > 0
    other = Admin(router)  # another account from the same client is not locked out
    assert router.post("/v1/auth/login", json={"email": other.email, "password": other.password}).status_code == 200


def test_a_slow_cell_does_not_slow_the_other_region(faulty: dict[str, Any]) -> None:
    """us-west answers only after DELAY (the proxy holds every reply); eu-west's callers must not wait on it.

    Counted, not timed to the millisecond: the slowness is controlled (every us-west answer is held DELAY
    seconds, so what us-west stored took at least DELAY), and eu-west's answers during the slowness are judged
    against DELAY itself, far above what a loaded machine adds to a fast request.
    """
    delay = 1.0
    url = faulty["stack"].dev.topology["router"]["url"]
    eu = Load(url, faulty["keys"]["eu-west"])
    time.sleep(1.0)
    faulty["proxy"].delay = delay
    slow_from = time.monotonic()
    us = Load(url, faulty["keys"]["us-west"], every=0.0)  # callers pile up on the slow region
    us2 = Load(url, faulty["keys"]["us-west"], every=0.0)
    time.sleep(3.0)
    # Stop the slow region's callers before the delay is lifted, so every answer they stored was held.
    us_samples = us.stop() + us2.stop()
    slow_until = time.monotonic()
    faulty["proxy"].delay = 0.0
    samples = eu.stop()
    assert all(s == 201 for _, s, _ in samples), {s for _, s, _ in samples}
    during = [t for at, s, t in samples if slow_from + 0.2 <= at - t and at <= slow_until]
    assert len(during) >= 10, len(during)  # eu-west kept flowing all along
    slowed = [t for t in during if t >= delay]
    assert len(slowed) <= len(during) // 10, (len(slowed), len(during))  # none waited behind us-west
    stored = [t for at, s, t in us_samples if s == 201 and at - t >= slow_from]
    assert stored and min(stored) >= delay, us_samples  # the slow region really was slow


def test_a_dead_cell_fails_fast_and_recovers(faulty: dict[str, Any]) -> None:
    stack: Stack = faulty["stack"]
    url = stack.dev.topology["router"]["url"]
    us = Load(url, faulty["keys"]["us-west"])
    eu = Load(url, faulty["keys"]["eu-west"])
    time.sleep(1.0)
    stack.dev.kill("cell[eu-west]")
    killed = time.monotonic()
    time.sleep(3.0)
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as client:
        status, took, r = post(client, faulty["keys"]["eu-west"])
        assert status == 503 and took < 0.1, (status, took)
        assert problem(r, 503) and int(r.headers["retry-after"]) >= 1
        regions = {x["name"]: x for x in client.get("/v1/regions").json()["data"]}
        assert regions["eu-west"]["status"].startswith("unreachable") and regions["us-west"]["status"] == "ok"
    stack.dev.restart("cell[eu-west]")
    restarted = time.monotonic()
    recovered = None
    # How long the cell takes to start is not what this measures (seconds here, tens of them when the machine
    # is loaded): the router must follow it once it answers, which the last assertion checks.
    while time.monotonic() - restarted < 60:
        if eu.samples and eu.samples[-1][1] == 201 and eu.samples[-1][0] > restarted:
            recovered = eu.samples[-1][0]
            break
        time.sleep(0.1)
    us_samples, eu_samples = us.stop(), eu.stop()
    assert all(s == 201 for _, s, _ in us_samples), [s for _, s, _ in us_samples if s != 201]
    outage = [s for at, s, _ in eu_samples if killed < at < restarted]
    assert outage and set(outage) <= {503}, set(outage)
    assert recovered is not None
    ready = _ready_at(stack, "cell[eu-west]", restarted)
    assert recovered - ready < 5.0, (recovered - ready)


def _ready_at(stack: Stack, name: str, since: float) -> float:
    """When the restarted cell first answered its own readiness probe (its start-up is not the router's)."""
    url = stack.dev.topology["cells"][name[5:-1]]["url"]
    with httpx.Client(timeout=2, trust_env=False) as client:
        while True:
            try:
                if client.get(url + "/readyz").status_code == 200:
                    return time.monotonic()
            except httpx.TransportError:
                pass
            if time.monotonic() - since > 60:
                raise AssertionError("cell never came back")
            time.sleep(0.05)


def test_routing_outlives_the_control_db_and_redis(faulty: dict[str, Any]) -> None:
    stack: Stack = faulty["stack"]
    router: httpx.Client = faulty["router"]
    admin: Admin = faulty["admin"]
    control = next(s for s in stack.dev.stores if isinstance(s, PostgresServer))
    control.stop()
    try:
        for key in faulty["keys"].values():
            assert post(router, key)[0] == 201
        # Still ready (the orchestrator keeps it in its Service): the outage shows as degraded, not as 503.
        ready = router.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded" and ready.json()["degraded"] == ["control_db"], ready.json()
        problem(router.get(f"/v1/projects/{faulty['projects']['eu-west']['id']}/interactions", headers=admin.h), 503)
    finally:
        control.start()
    stack.redis["router"].stop()
    try:
        for key in faulty["keys"].values():
            status, took, _ = post(router, key)
            assert status == 201 and took < 1.0, (status, took)
        assert "redis" in router.get("/readyz").json()["degraded"]  # (the control DB may still be starting)
    finally:
        stack.redis["router"].start()
    # A cell without its Redis still takes ingest (the outbox keeps follow-up jobs): ready, degraded.
    eu_cell = stack.dev.topology["cells"]["eu-west"]["url"]
    stack.redis["eu-west"].stop()
    try:
        ready = httpx.get(eu_cell + "/readyz", timeout=5, trust_env=False)
        assert ready.status_code == 200 and ready.json()["degraded"] == ["redis"], ready.text
        assert post(router, faulty["keys"]["eu-west"])[0] == 201
    finally:
        stack.redis["eu-west"].start()
    # Once the control DB is back, dashboard sessions work again within seconds (its crash recovery and the
    # pool's fresh connections took over 10 s once on a 2-core machine running three other suites).
    deadline = time.monotonic() + 30
    while (status := router.get(f"/v1/projects/{faulty['projects']['eu-west']['id']}/interactions",
                                headers=admin.h).status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200


def test_sigterm_lets_in_flight_requests_finish(faulty: dict[str, Any]) -> None:
    """Graceful shutdown: a request the router is relaying when SIGTERM arrives still gets its answer."""
    import signal

    stack: Stack = faulty["stack"]
    url = stack.dev.topology["router"]["url"]
    faulty["proxy"].delay = 1.0  # the us-west cell answers slowly, so the request is in flight
    result: dict[str, Any] = {}

    def slow() -> None:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            result["status"] = post(client, faulty["keys"]["us-west"])[0]

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.4)
    router = stack.dev.part("router").proc
    router.send_signal(signal.SIGTERM)
    thread.join(20)
    faulty["proxy"].delay = 0.0
    assert result.get("status") == 201, result
    assert router.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
    stack.dev.restart("router")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    assert post(faulty["router"], faulty["keys"]["eu-west"])[0] == 201
