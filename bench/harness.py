"""What the benchmarks share: a running topology on this machine's stores, load generators, tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from relay.devstack import DevStack
from relay.embedded import RedisServer
from tests.services import StorePostgres

MACHINE = f"{os.cpu_count()} vCPU, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"


def need(*tools: str) -> None:
    """Make sure command-line tools exist, installing Debian's packages when we may (root, apt)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    packages = {"wrk": "wrk", "nginx": "nginx-light"}
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *(packages[t] for t in missing)], check=False,
                       capture_output=True)
    still = [t for t in tools if shutil.which(t) is None]
    if still:
        names = ", ".join(packages[t] for t in still)
        raise SystemExit(f"benchmark needs {', '.join(still)} (Debian packages {names})")


@dataclass
class Topology:
    """A topology started for a benchmark, with an admin session."""

    dev: DevStack
    pg: StorePostgres
    redis: list[RedisServer]
    router: httpx.Client
    admin: dict[str, str]

    def close(self) -> None:
        self.router.close()
        self.dev.stop()
        for r in self.redis:
            r.stop()
        self.pg.close()


def start(name: str, router_env: dict[str, str] | None = None) -> Topology:
    """Router + two cells on this run's own databases and Redis servers, quiet (logs to a temp dir)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"relay-bench-{name}-"))
    pg = StorePostgres(scratch)
    redis = [RedisServer(scratch / f"redis-{s}", persist=False).start() for s in ("router", "us-west", "eu-west")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_ROUTER_DATABASE_URL"] = pg.database("router")
    env["RELAY_ROUTER_REDIS_URL"] = redis[0].url
    for region, server in zip(("us-west", "eu-west"), redis[1:], strict=True):
        var = region.upper().replace("-", "_")
        env[f"RELAY_{var}_DATABASE_URL"] = pg.database(region)
        env[f"RELAY_{var}_REDIS_URL"] = server.url
    limits = '{"ingest": "1000000/second", "management": "1000000/second", "uploads": "1000000/second"}'
    dev = DevStack(scratch / "state", port=0, environ=env, log_dir=scratch / "logs",
                   router_env={"RELAY_RATE_LIMITS": limits, "RELAY_LOG_LEVEL": "WARNING", **(router_env or {})})
    dev.start()
    router = httpx.Client(base_url=dev.topology["router"]["url"], timeout=30, trust_env=False)
    r = router.post("/v1/auth/signup", json={"email": f"bench-{name}@example.com", "password": "benchmark pass",
                                             "name": "bench"})
    token = r.json()["token"]
    return Topology(dev, pg, redis, router, {"Authorization": f"Bearer {token}"})


def project_key(topo: Topology, region: str, scopes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new project in `region` and a key for it."""
    p = topo.router.post("/v1/projects", json={"name": "bench", "region": region}, headers=topo.admin).json()
    k = topo.router.post(f"/v1/projects/{p['id']}/api-keys", json={"name": "bench", "scopes": scopes},
                         headers=topo.admin).json()
    return p, k


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, body: bytes, headers: dict[str, str], *, seconds: int = 8, connections: int = 32,
        threads: int = 2, per_request: list[dict[str, str]] | None = None) -> WrkResult:
    """Closed-loop POST load with wrk; throughput and latency percentiles.

    `per_request`: header sets each sent with one request only, in turn (a cell refuses a hop signature it has
    seen: requests straight to a cell need one signature each); once they run out, requests reuse the first
    and count as errors, so give more than the run can send.
    """
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', f"wrk.body = [[{body.decode()}]]"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if per_request:  # one set per line, tab-separated: a Lua table this large would overflow LuaJIT's constants
        names = list(per_request[0])
        data = Path(tempfile.mkstemp(suffix=".tsv")[1])
        data.write_text("".join("\t".join(h[n] for n in names) + "\n" for h in per_request))
        lines += [f"local names = {{{', '.join(repr(n).replace(chr(39), chr(34)) for n in names)}}}",
                  "local counter = 1",
                  "function setup(thread) thread:set('tid', counter); counter = counter + 1 end",
                  "function init(args)",
                  "  sets, idx, n = {}, 1, 0",
                  f"  for line in io.lines('{data}') do",
                  f"    n = n + 1; if (n - tid) % {threads} == 0 then",
                  "      local row, i = {}, 1",
                  "      for field in string.gmatch(line, '[^\\t]+') do row[names[i]] = field; i = i + 1 end",
                  "      sets[#sets + 1] = row end end end",
                  "function request() local h = sets[idx] or sets[1]; idx = idx + 1",
                  "  for k, v in pairs(h) do wrk.headers[k] = v end",
                  "  return wrk.format() end"]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          "-s", str(script), url], check=True, capture_output=True, text=True).stdout
    script.unlink()
    if per_request:
        data.unlink()
    if not re.search(r"^\s*50%\s+[\d.]+\w+", out, re.M):
        raise RuntimeError(f"wrk printed no latency distribution:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    return WrkResult(rps, p50, p99, errors)


def result(name: str, value: float, unit: str) -> None:
    """One figure, in the format `make bench` readers parse."""
    print(f"RESULT {name} {value:.3f} {unit}", flush=True)
