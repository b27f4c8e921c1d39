"""`relay dev` supervises like an orchestrator: a dead child comes back, the rest keep serving, signals stop all.

These run the real command (`python -m relay dev`) as a newcomer would, pointed at this run's databases and
throwaway Redis servers so that start-up is quick, and act on it only through signals and HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.devstack import DevStack
from relay.embedded import RedisServer, free_port
from tests.conftest import Admin, until
from tests.faults import Load
from tests.services import StorePostgres, redis_server

ROOT = Path(__file__).resolve().parents[2]


class Dev:
    """A `relay dev` process and its state dir."""

    def __init__(self, pg: StorePostgres, scratch: Path, name: str) -> None:
        self.state = scratch / name / "state"
        self.redis: list[RedisServer] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env["RELAY_ROUTER_DATABASE_URL"] = pg.database(f"{name}_router")
        for store in ("router", "us-west", "eu-west"):
            var = store.upper().replace("-", "_")
            server = redis_server(scratch / name, store)
            self.redis.append(server)
            env[f"RELAY_{var}_REDIS_URL"] = server.url
            if store != "router":
                env[f"RELAY_{var}_DATABASE_URL"] = pg.database(f"{name}_{store}")
        self.log = (scratch / name / "dev.log").open("wb")
        # Started the way `run.sh` and a shell's `&` start it: SIGINT inherited as ignored.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "dev", "--state-dir", str(self.state), "--port", str(free_port())],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        self.topology: dict[str, Any] = until(self._topology, 180, "relay dev wrote topology.json")

    def _topology(self) -> dict[str, Any] | None:
        assert self.proc.poll() is None, self.output()
        path = self.state / "topology.json"
        return dict(json.loads(path.read_text())) if path.exists() else None

    def pid(self, name: str) -> int:
        return int(json.loads((self.state / "processes.json").read_text())[name])

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        for server in self.redis:
            server.stop()


@pytest.fixture(scope="module")
def dev(pg: StorePostgres, scratch: Path) -> Iterator[Dev]:
    running = Dev(pg, scratch, "supervised")
    try:
        yield running
    finally:
        running.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_cell_is_restarted_while_the_other_region_serves(dev: Dev) -> None:
    url = dev.topology["router"]["url"]
    router = httpx.Client(base_url=url, timeout=30, trust_env=False)
    admin = Admin(router)
    keys = {r: admin.key(admin.project(r), ["ingest"]) for r in ("us-west", "eu-west")}
    us, eu = Load(url, keys["us-west"]), Load(url, keys["eu-west"])
    until(lambda: len(eu.samples) > 5 and len(us.samples) > 5, 30, "traffic flowing")
    old = dev.pid("cell[eu-west]")
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    new = until(lambda: (pid := dev.pid("cell[eu-west]")) != old and pid, 60, "cell[eu-west] started again")
    # Back when eu-west ingest answers 201 again after the kill.
    until(lambda: any(at > killed and s == 201 for at, s, _ in eu.samples[-5:]), 120, "eu-west serving again")
    us_samples, eu_samples = us.stop(), eu.stop()
    router.close()
    assert _alive(new) and not _alive(old)
    assert [s for _, s, _ in us_samples if s != 201] == [], "us-west must answer 201 throughout"
    after = [s for at, s, took in eu_samples if at - took > killed]  # sent after the kill
    outage = after[:after.index(201)]
    assert outage and set(outage) == {503}, after  # refused with 503 until the restart, never a hang or a 500
    assert after[after.index(201):].count(201) >= 1
    assert all(s == 201 for s in after[after.index(201):][-3:]), after
    log = dev.output()
    assert "cell[eu-west] exited with -9; restarting in 0.5 s" in log, log[-2000:]
    assert "cell[eu-west] started again" in log
    assert dev.proc.poll() is None  # relay dev itself never stopped


def test_503_during_the_outage_carries_retry_after(dev: Dev) -> None:
    url = dev.topology["router"]["url"]
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as router:
        admin = Admin(router)
        key = admin.key(admin.project("eu-west"), ["ingest"])
        pid = dev.pid("cell[eu-west]")
        os.kill(pid, signal.SIGKILL)
        until(lambda: not _alive(pid), 10, "cell gone")
        r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": {"text": "x"}})
        if r.status_code == 503:  # the restart may already have happened on a fast machine
            assert int(r.headers["retry-after"]) >= 1 and r.json()["status"] == 503
        else:
            assert r.status_code == 201
        until(lambda: router.post("/v1/ingest/interactions", headers=key["h"],
                                  json={"type": "bug", "content": {"text": "x"}}).status_code == 201, 120, "back")


def test_sigint_to_relay_dev_stops_everything(dev: Dev) -> None:
    pids = json.loads((dev.state / "processes.json").read_text()).values()
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(60) == 0, dev.output()[-2000:]
    assert not any(_alive(int(p)) for p in pids)
    assert not (dev.state / "topology.json").exists()
    assert "relay dev: stopping" in dev.output()


def test_a_crash_loop_is_reported_and_given_up(tmp_path: Path) -> None:
    """A child that dies at once every time is restarted a few times with growing delays, then left stopped."""
    stack = DevStack(tmp_path)
    part = stack._spawn("cell[crashy]", ["--no-such-command"], {})
    said: list[str] = []
    now = time.monotonic()
    delays = []
    for _ in range(200):
        part.proc.wait(30)
        lines = stack.supervise(now)
        said += lines
        if part.given_up:
            break
        if part.restart_at is not None:
            delays.append(part.restart_at - now)
            now = part.restart_at
            said += stack.supervise(now)
    assert part.given_up, said
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0], delays
    assert said[-1].startswith("relay dev: cell[crashy] exited 6 times in a row"), said
    assert stack.supervise(now + 100) == []  # never again
