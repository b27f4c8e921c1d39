"""`relay dev`: the whole system on one machine — router, every region's cell and worker, and their stores.

Each region gets its own Postgres, Redis and object-store directory, and the
router its own Postgres and Redis, exactly as in production: nothing is shared
between regions. Stores are embedded (see `relay.embedded`) unless environment
variables name real servers:

    RELAY_ROUTER_DATABASE_URL, RELAY_ROUTER_REDIS_URL
    RELAY_<REGION>_DATABASE_URL, RELAY_<REGION>_REDIS_URL, RELAY_<REGION>_OBJECT_STORE
        (REGION upper-cased with `_` for `-`, e.g. RELAY_EU_WEST_DATABASE_URL)
    RELAY_DEV_REGIONS   regions and key tags, default "us-west:us,eu-west:eu"
    RELAY_SMTP_URL, RELAY_MAIL_FROM   the mail server the router and the cells send through; without one,
        every email is written as one `.eml` file under `DIR/mail/`

`topology.json` is written to the state dir once every piece answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from common.migrate import migrate
from common.settings import DEFAULT_REGIONS, check_regions
from relay.embedded import PostgresServer, RedisServer, child_setup, free_port

ROOT = Path(__file__).resolve().parent.parent


def regions_from_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The regions to run: `RELAY_DEV_REGIONS="us-west:us,eu-west:eu"` or the defaults."""
    raw = environ.get("RELAY_DEV_REGIONS", "")
    if not raw:
        return dict(DEFAULT_REGIONS)
    regions = dict(item.split(":", 1) for item in raw.split(",") if item)
    check_regions(regions)
    return regions


def _var(region: str, name: str) -> str:
    return f"RELAY_{region.upper().replace('-', '_')}_{name}"


STABLE_SECONDS = 30.0
"""A child that ran this long before exiting was not crash-looping: its restart count starts again."""
MAX_RESTARTS = 5
"""Consecutive quick exits after which `relay dev` stops restarting a child and says so."""


@dataclass
class Part:
    """One running child process of the stack, with what it takes to start it again."""

    name: str
    proc: subprocess.Popen[bytes]
    args: list[str]
    env: dict[str, str]
    netns: str | None = None
    started: float = field(default_factory=time.monotonic)
    crashes: int = 0
    """Exits in a row, each within STABLE_SECONDS of its start."""
    restart_at: float | None = None
    given_up: bool = False


@dataclass
class DevStack:
    """Start and stop the whole topology; used by `relay dev` and by the end-to-end tests."""

    state_dir: Path
    port: int = 8000
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    log_dir: Path | None = None
    """Where children write their output (one file each); None: this process's stdout."""
    router_env: dict[str, str] = field(default_factory=dict)
    """Extra settings for the router (tests: tight rate limits)."""
    cell_env: dict[str, str] = field(default_factory=dict)
    """Extra settings for every cell API and worker (tests: small pools on a shared Postgres)."""
    netns: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Regions to run inside their own network namespace: region → (namespace, its address). The cell, its
    worker and its embedded stores run there, listening on that address (tests of network isolation)."""
    trace_dir: Path | None = None
    """When set, each child exports its spans as JSON lines to `<trace_dir>/<name>.jsonl`."""
    cell_urls: dict[str, str] = field(default_factory=dict)
    """How the router reaches a region when not directly (tests: through a fault-injecting proxy)."""
    cell_ports: dict[str, int] = field(default_factory=dict)
    """A region's cell on a port chosen by the caller (tests: the port a proxy forwards to). Without it a
    cell listens on `port + 101 + i` when `port` is set, else on a free port."""
    cell_tls: tuple[Path, Path, Path] | None = None
    """(certificate, key, CA bundle): cells serve HTTPS with this certificate and the router checks it against
    the CA, as in a deployment whose hop crosses a network (tests of the TLS hop)."""
    router_cell_ca: Path | None = None
    """The CA bundle the router checks cells against, when not `cell_tls`'s (tests: a CA it must refuse)."""
    stores: list[PostgresServer | RedisServer] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    topology: dict[str, Any] = field(default_factory=dict)

    def start(self, timeout: float = 120.0) -> dict[str, Any]:
        """Bring everything up and write `topology.json`; returns the topology."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "topology.json").unlink(missing_ok=True)
        regions = regions_from_env(self.environ)
        secrets_file = self.state_dir / "secrets.json"
        hop = json.loads(secrets_file.read_text()) if secrets_file.exists() else {}
        for region in regions:
            hop.setdefault(region, secrets.token_urlsafe(32))
            hop.setdefault(f"{region}:secret_key", secrets.token_urlsafe(32))
        hop.setdefault("key_pepper", secrets.token_urlsafe(32))  # one for the router and every cell
        hop.setdefault("metrics_token", secrets.token_urlsafe(32))
        metrics_token = self.environ.get("RELAY_METRICS_TOKEN") or hop["metrics_token"]
        secrets_file.write_text(json.dumps(hop))
        secrets_file.chmod(0o600)

        router_port = self.port or free_port()
        router_db = self._database("router", self.environ.get("RELAY_ROUTER_DATABASE_URL"))
        router_redis = self._redis("router", self.environ.get("RELAY_ROUTER_REDIS_URL"))
        cells: dict[str, dict[str, Any]] = {}
        for i, region in enumerate(regions):
            netns, host = self.netns.get(region, (None, "127.0.0.1"))
            objects = self.environ.get(_var(region, "OBJECT_STORE"))
            if not objects:
                directory = (self.state_dir / region / "objects").resolve()
                directory.mkdir(parents=True, exist_ok=True)
                objects = directory.as_uri()
            cell_port = self.cell_ports.get(region) or (router_port + 101 + i if self.port else free_port())
            cells[region] = {
                "url": f"{'https' if self.cell_tls else 'http'}://{host}:{cell_port}",
                "database_url": self._database(region, self.environ.get(_var(region, "DATABASE_URL")), host, netns),
                "redis_url": self._redis(region, self.environ.get(_var(region, "REDIS_URL")), host, netns),
                "object_store": objects,
            }

        async def migrate_all() -> None:
            await migrate(router_db, ROOT / "router" / "migrations")
            for cell in cells.values():
                await migrate(cell["database_url"], ROOT / "cell" / "migrations")

        asyncio.run(migrate_all())

        regions_json = json.dumps(regions)
        mail = self._mail()
        for region, cell in cells.items():
            env = {"RELAY_REGION": region, "RELAY_DATABASE_URL": cell["database_url"],
                   "RELAY_REDIS_URL": cell["redis_url"], "RELAY_OBJECT_STORE": cell["object_store"],
                   "RELAY_HOP_SECRET": hop[region], "RELAY_SECRET_KEY": hop[f"{region}:secret_key"],
                   "RELAY_KEY_PEPPER": hop["key_pepper"],
                   "RELAY_REGIONS": regions_json, "RELAY_METRICS_TOKEN": metrics_token,
                   "RELAY_PORT": cell["url"].rsplit(":", 1)[1], "RELAY_WEBHOOKS_ALLOW_LOOPBACK": "1",
                   "RELAY_HOST": self.netns.get(region, (None, "127.0.0.1"))[1], **mail, **self.cell_env}
            if self.cell_tls:
                env |= {"RELAY_TLS_CERT_FILE": str(self.cell_tls[0]), "RELAY_TLS_KEY_FILE": str(self.cell_tls[1])}
            netns = self.netns.get(region, (None, ""))[0]
            self._spawn(f"cell[{region}]", ["cell", "--region", region], env, netns)
            self._spawn(f"worker[{region}]", ["worker", "--region", region], env, netns)
        router_env = {
            "RELAY_DATABASE_URL": router_db, "RELAY_REDIS_URL": router_redis, "RELAY_PORT": str(router_port),
            "RELAY_CELLS": json.dumps({r: {"url": self.cell_urls.get(r, c["url"]), "tag": regions[r],
                                           "hop_secret": hop[r],
                                           "ca_file": str(self.router_cell_ca or self.cell_tls[2])
                                           if self.cell_tls else ""}
                                       for r, c in cells.items()}),
            "RELAY_DIRECTORY_SNAPSHOT": str((self.state_dir / "router" / "directory.json").resolve()),
            "RELAY_KEY_PEPPER": hop["key_pepper"],
            "RELAY_METRICS_TOKEN": metrics_token,
            "RELAY_COOKIE_SECURE": "false",  # the dashboard is served over plain http on localhost
            **mail, **self.router_env,
        }
        self._spawn("router", ["router"], router_env)

        deadline = time.monotonic() + timeout
        for cell in cells.values():
            self._wait_ready(cell["url"] + "/readyz", deadline)
        router_url = f"http://127.0.0.1:{router_port}"
        self._wait_ready(router_url + "/readyz", deadline)
        self.topology = {
            "router": {"url": router_url, "database_url": router_db, "redis_url": router_redis,
                       "metrics_token": metrics_token},
            "cells": cells,
        }
        tmp = self.state_dir / "topology.json.tmp"
        tmp.write_text(json.dumps(self.topology, indent=2))
        tmp.replace(self.state_dir / "topology.json")
        return self.topology

    def _mail(self) -> dict[str, str]:
        """How the router and the cells send email: the SMTP server the environment names, else one `.eml` file
        per message under `DIR/mail/`."""
        passed = {k: self.environ[k] for k in ("RELAY_SMTP_URL", "RELAY_MAIL_FROM") if self.environ.get(k)}
        if "RELAY_SMTP_URL" in passed:
            return passed
        directory = (self.state_dir / "mail").resolve()
        directory.mkdir(parents=True, exist_ok=True)
        return {**passed, "RELAY_MAIL_DIR": str(directory)}

    def _database(self, name: str, given: str | None, host: str = "127.0.0.1", netns: str | None = None) -> str:
        if given:
            return given
        server = PostgresServer(self.state_dir / name / "postgres", host=host, netns=netns).start()
        self.stores.append(server)
        return server.url

    def _redis(self, name: str, given: str | None, host: str = "127.0.0.1", netns: str | None = None) -> str:
        if given:
            return given
        server = RedisServer(self.state_dir / name / "redis", host=host, netns=netns).start()
        self.stores.append(server)
        return server.url

    def _spawn(self, name: str, args: list[str], env: dict[str, str], netns: str | None = None) -> Part:
        part = Part(name, self._launch(name, args, env, netns), args, env, netns)
        self.parts.append(part)
        self._write_processes()
        return part

    def _launch(self, name: str, args: list[str], env: dict[str, str], netns: str | None) -> subprocess.Popen[bytes]:
        full = {k: v for k, v in self.environ.items() if not k.startswith("RELAY_")}
        full.update(env)
        full["PYTHONUNBUFFERED"] = "1"
        if self.trace_dir is not None:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            full["RELAY_TRACE_FILE"] = str(self.trace_dir / f"{name.replace('[', '-').rstrip(']')}.jsonl")
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{name.replace('[', '-').rstrip(']')}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "relay", *args], env=full, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT if out else None, preexec_fn=child_setup(netns))
        if out is not None:
            out.close()
        return proc

    def _write_processes(self) -> None:
        """`processes.json` in the state dir: each child's pid, for operators (and tests) that signal one."""
        tmp = self.state_dir / "processes.json.tmp"
        tmp.write_text(json.dumps({p.name: p.proc.pid for p in self.parts}, indent=2))
        tmp.replace(self.state_dir / "processes.json")

    def supervise(self, now: float | None = None) -> list[str]:
        """Restart children that exited, with backoff, as an orchestrator would; returns what to tell the user.

        A child that exits is started again after 0.5 s, then 1, 2, 4, 8 s while it keeps dying within
        STABLE_SECONDS of each start; after MAX_RESTARTS such exits in a row it is left stopped and reported.
        The other children are never touched: one region's crash must not take the rest down.
        """
        now = time.monotonic() if now is None else now
        said: list[str] = []
        for part in self.parts:
            if part.given_up or part.proc.poll() is None:
                continue
            if part.restart_at is None:
                part.crashes = part.crashes + 1 if now - part.started < STABLE_SECONDS else 1
                if part.crashes > MAX_RESTARTS:
                    part.given_up = True
                    said.append(f"relay dev: {part.name} exited {part.crashes} times in a row, each within "
                                f"{STABLE_SECONDS:.0f} s of starting; not restarting it (see its output above)")
                    continue
                delay = min(0.5 * 2 ** (part.crashes - 1), 15.0)
                part.restart_at = now + delay
                said.append(f"relay dev: {part.name} exited with {part.proc.returncode}; restarting in "
                            f"{delay:.1f} s (restart {part.crashes} of at most {MAX_RESTARTS})")
            elif now >= part.restart_at:
                part.proc = self._launch(part.name, part.args, part.env, part.netns)
                part.started, part.restart_at = now, None
                self._write_processes()
                said.append(f"relay dev: {part.name} started again (pid {part.proc.pid})")
        return said

    def part(self, name: str) -> Part:
        """A running piece by name: `router`, `cell[eu-west]`, `worker[eu-west]`."""
        return next(p for p in self.parts if p.name == name)

    def kill(self, name: str) -> None:
        """Kill one piece at once (SIGKILL), as a crash would."""
        part = self.part(name)
        part.proc.kill()
        part.proc.wait()

    def restart(self, name: str) -> None:
        """Start a killed or stopped piece again with the same settings."""
        part = self.part(name)
        if part.proc.poll() is None:
            part.proc.terminate()
            part.proc.wait(15)
        self.parts.remove(part)
        self._spawn(part.name, part.args, part.env, part.netns)

    def _wait_ready(self, url: str, deadline: float) -> None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=self.cell_tls[2]) if self.cell_tls else True
        with httpx.Client(trust_env=False, timeout=2.0, verify=verify) as client:
            while time.monotonic() < deadline:
                for part in self.parts:
                    if part.proc.poll() is not None:
                        raise RuntimeError(f"{part.name} exited with {part.proc.returncode} during start-up")
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"{url} not ready in time")

    def dead(self) -> list[str]:
        """Names of children that exited."""
        return [p.name for p in self.parts if p.proc.poll() is not None]

    def stop(self) -> None:
        """Stop services (they finish in-flight work), then the stores; nothing is left running."""
        for part in self.parts:
            if part.proc.poll() is None:
                part.proc.send_signal(signal.SIGTERM)
        for part in self.parts:
            try:
                part.proc.wait(15)
            except subprocess.TimeoutExpired:
                part.proc.kill()
                part.proc.wait()
        for store in reversed(self.stores):
            store.stop()
        self.parts.clear()
        self.stores.clear()
        (self.state_dir / "topology.json").unlink(missing_ok=True)
        (self.state_dir / "processes.json").unlink(missing_ok=True)


def run_dev(state_dir: Path, port: int) -> int:
    """Entry point of `relay dev`: supervise every child until Ctrl-C, SIGINT or SIGTERM, then stop everything.

    SIGINT gets a handler of its own: a shell that starts `relay dev` in the background leaves SIGINT
    ignored, and Python keeps an inherited "ignore", so `kill -INT` would otherwise do nothing.
    """
    stack = DevStack(state_dir, port)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        topology = stack.start()
        print(f"relay dev: router on {topology['router']['url']}; regions "
              + ", ".join(f"{r} on {c['url']}" for r, c in topology["cells"].items())
              + f"; topology in {state_dir / 'topology.json'}", flush=True)
        while True:
            for line in stack.supervise():
                print(line, file=sys.stderr, flush=True)
            time.sleep(0.25)
    except KeyboardInterrupt:
        print("relay dev: stopping", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
