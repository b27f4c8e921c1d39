"""Router overhead, measured side by side: straight to a cell, through the router, through nginx.

1. Ingest of a fixed ~2 KB bug report straight to the us-west cell vs through the router (wrk, closed
   loop, 32 connections): throughput ratio; and at a steady open-loop load of a quarter of the cell's
   capacity, the latency the router adds, from paired rounds (direct then router at the same offered load,
   order alternating): per round p50(router) - p50(direct) and p99(router) - p99(direct), reported as the
   median over rounds with their spread. (A p99 taken once from each side and subtracted is dominated by
   the two runs' own tails and can come out negative.) The same rounds again with the region's worker
   stopped (`*_worker_stopped`): the worker enriches every report the load ingests (~4-5 ms of CPU each,
   more than a core at this rate), and on this 2-core machine it then starves whichever process is ready
   next; the routed path has one more process to wake (the router), so it pays that wait once more. In
   production workers are their own replicas (as `bench/cell.py` does for its headline figures); the figure
   with the worker running stays, measured first, as it always was.
2. The router vs nginx as a plain reverse proxy in front of the same cell: throughput ratio.
3. A fresh key (its first request pays bcrypt in the cell) vs a warm key.

The cell only answers signed requests, each signature once (a nonce); for the direct and nginx runs the
benchmark signs every request itself (the same HMAC the router computes, wrk sending one presigned set of
hop headers per request), so the cell does identical work in all three cases.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import MACHINE, Topology, need, project_key, result, start, wrk
from common.signing import Actor, sign
from relay.embedded import free_port

PATH = "/v1/ingest/interactions"
ROUNDS = 3
SECONDS = 6
STEADY_ROUNDS = 6
STEADY_SECONDS = 5


def report_body() -> bytes:
    """A realistic ~2 KB bug report: text, steps, console and network logs, context."""
    body = {
        "type": "bug", "source": "widget", "severity": "high", "tags": ["checkout", "payments"],
        "content": {"title": "Checkout button does nothing", "text": "Clicking pay shows a spinner forever. " * 8,
                    "steps": ["open cart", "click checkout", "enter card", "click pay"]},
        "logs": {"console": [{"level": "error", "message": f"TypeError: cannot read property total of undefined #{i}",
                              "timestamp": 1700000000000 + i} for i in range(6)],
                 "network": [{"method": "POST", "url": "https://api.example.com/v2/checkout/confirm",
                              "status": 502, "duration": 1200 + i} for i in range(4)]},
        "technical_context": {"url": "https://shop.example.com/checkout", "viewport": "1440x900",
                              "browser": "Firefox 132", "os": "macOS 15.1", "locale": "en-US"},
    }
    raw = json.dumps(body).encode()
    assert 1800 <= len(raw) <= 2600, len(raw)
    return raw


def signed_headers(topo: Topology, key: dict[str, Any], region: str, body: bytes) -> dict[str, str]:
    """What the router would add for this key and body: a hop signature (its own nonce: a cell takes each
    signature once), fresh for the next 30 s."""
    secret = json.loads((topo.dev.state_dir / "secrets.json").read_text())[region].encode()
    actor = Actor(kind="key", project_id=key["project_id"], key_prefix=key["key_prefix"])
    return sign(secret, "POST", PATH, actor, body=body)


def presigned(topo: Topology, key: dict[str, Any], region: str, body: bytes, seconds: float) -> list[dict[str, str]]:
    """Enough hop signatures for a wrk run of `seconds` straight to a cell (signed now: use them at once)."""
    return [signed_headers(topo, key, region, body) for _ in range(int(3000 * seconds))]


def nginx(port: int, upstream: str, workdir: Path) -> subprocess.Popen[bytes]:
    """nginx as a plain reverse proxy (keep-alive upstream); the client's requests carry their hop headers."""
    host = upstream.removeprefix("http://")
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    upstream cell {{ server {host}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://cell;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


async def steady(url: str, headers: Callable[[], dict[str, str]], body: bytes, rate: float,
                 seconds: float) -> list[float]:
    """Open-loop load: one request every 1/rate s regardless of answers; returns latencies in ms.

    `headers` is called per request, so requests straight to a cell carry a fresh hop signature each.
    """
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            began = time.perf_counter()
            async with session.post(url, data=body, headers=headers()) as r:
                await r.read()
                if r.status == 201:
                    latencies.append((time.perf_counter() - began) * 1000)

        tasks = []
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            tasks.append(asyncio.create_task(one()))
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
    return latencies


def added_latency(direct: Callable[[], list[float]], routed: Callable[[], list[float]],
                  rounds: int) -> tuple[list[float], list[float]]:
    """Paired rounds at one offered load: per round, the router's p50 and p99 minus the direct run's."""
    p50s, p99s = [], []
    for i in range(rounds):
        first, second = (direct, routed) if i % 2 == 0 else (routed, direct)
        a, b = first(), second()
        d, r = (a, b) if first is direct else (b, a)
        p50s.append(pct(r, .5) - pct(d, .5))
        p99s.append(pct(r, .99) - pct(d, .99))
    return p50s, p99s


def stop_worker(topo: Topology, region: str) -> None:
    """Stop a region's worker (it finishes its current job first); `topo.close` is fine with it stopped."""
    worker = topo.dev.part(f"worker[{region}]").proc
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    need("wrk", "nginx")
    topo = start("router")
    try:
        project, key = project_key(topo, "us-west", ["ingest"])
        key["project_id"] = project["id"]
        body = report_body()
        cell_url = topo.dev.topology["cells"]["us-west"]["url"]
        router_url = topo.dev.topology["router"]["url"]
        auth = {"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"}
        nginx_port = free_port()
        work = Path(tempfile.mkdtemp(prefix="relay-nginx-"))
        runs: dict[str, list[Any]] = {"direct": [], "router": [], "nginx": []}
        wrk(router_url + PATH, body, auth, seconds=2)  # warm up: key verified, pools open
        for _ in range(ROUNDS):
            runs["direct"].append(wrk(cell_url + PATH, body, auth, seconds=SECONDS,
                                      per_request=presigned(topo, key, "us-west", body, SECONDS)))
            runs["router"].append(wrk(router_url + PATH, body, auth, seconds=SECONDS))
            proc = nginx(nginx_port, cell_url, work)
            try:
                runs["nginx"].append(wrk(f"http://127.0.0.1:{nginx_port}{PATH}", body, auth, seconds=SECONDS,
                                         per_request=presigned(topo, key, "us-west", body, SECONDS)))
            finally:
                proc.terminate()
                proc.wait()
        med = {name: statistics.median(r.rps for r in rs) for name, rs in runs.items()}
        errors = {name: sum(r.errors for r in rs) for name, rs in runs.items()}
        print(f"machine: {MACHINE}, load average {os.getloadavg()[0]:.1f}; body {len(body)} bytes; wrk 32 connections, "
              f"{SECONDS}s x {ROUNDS} rounds")
        for name, rs in runs.items():
            print(f"  {name:7s} rps {[round(r.rps) for r in rs]} p50 {[r.p50_ms for r in rs]} ms"
                  f" p99 {[r.p99_ms for r in rs]} ms non-2xx {errors[name]}")

        rate = med["direct"] / 4
        direct_h = lambda: {**auth, **signed_headers(topo, key, "us-west", body)}  # noqa: E731 - fresh per request
        added50, added99 = added_latency(
            lambda: asyncio.run(steady(cell_url + PATH, direct_h, body, rate, STEADY_SECONDS)),
            lambda: asyncio.run(steady(router_url + PATH, lambda: auth, body, rate, STEADY_SECONDS)),
            STEADY_ROUNDS)
        print(f"  steady {rate:.0f} req/s, {STEADY_ROUNDS} paired rounds of {STEADY_SECONDS}s: added p50 "
              f"{[round(x, 2) for x in added50]} ms, added p99 {[round(x, 2) for x in added99]} ms")
        stop_worker(topo, "us-west")
        quiet50, quiet99 = added_latency(
            lambda: asyncio.run(steady(cell_url + PATH, direct_h, body, rate, STEADY_SECONDS)),
            lambda: asyncio.run(steady(router_url + PATH, lambda: auth, body, rate, STEADY_SECONDS)),
            STEADY_ROUNDS)
        print(f"  the same, region's worker stopped (load average {os.getloadavg()[0]:.1f}): added p50 "
              f"{[round(x, 2) for x in quiet50]} ms, added p99 {[round(x, 2) for x in quiet99]} ms")

        fresh, warm = [], []
        with_keys = [project_key(topo, "us-west", ["ingest"])[1] for _ in range(8)]
        for k in with_keys:
            h = {"Authorization": f"Bearer {k['key']}"}
            began = time.perf_counter()
            assert topo.router.post(PATH, content=body, headers={**h, "Content-Type": "application/json"}
                                    ).status_code == 201
            fresh.append((time.perf_counter() - began) * 1000)
            for _ in range(5):
                began = time.perf_counter()
                topo.router.post(PATH, content=body, headers={**h, "Content-Type": "application/json"})
                warm.append((time.perf_counter() - began) * 1000)

        result("router.direct_rps", med["direct"], "req/s")
        result("router.router_rps", med["router"], "req/s")
        result("router.nginx_rps", med["nginx"], "req/s")
        result("router.router_vs_direct", med["router"] / med["direct"], "ratio")
        result("router.router_vs_nginx", med["router"] / med["nginx"], "ratio")
        result("router.added_p50_at_quarter_load", statistics.median(added50), "ms")
        result("router.added_p50_spread", max(added50) - min(added50), "ms")
        result("router.added_p99_at_quarter_load", statistics.median(added99), "ms")
        result("router.added_p99_spread", max(added99) - min(added99), "ms")
        result("router.added_p50_at_quarter_load_worker_stopped", statistics.median(quiet50), "ms")
        result("router.added_p50_spread_worker_stopped", max(quiet50) - min(quiet50), "ms")
        result("router.added_p99_at_quarter_load_worker_stopped", statistics.median(quiet99), "ms")
        result("router.added_p99_spread_worker_stopped", max(quiet99) - min(quiet99), "ms")
        result("router.fresh_key_first_request", statistics.median(fresh), "ms")
        result("router.warm_key_request", statistics.median(warm), "ms")
    finally:
        topo.close()


if __name__ == "__main__":
    main()
