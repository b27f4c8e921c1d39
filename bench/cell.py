"""The cell's storage path, measured side by side in one run.

1. Sustained ingest of ~2 KB bug reports (committed and acknowledged, straight to the cell with the
   router's signature) vs the raw rate of asyncpg inserting the same rows (interaction, its logs, its
   outbox row, one transaction each) with as many concurrent connections: the storage path's limit here.
   The headline figures (`cell.ingest_rate`, `cell.raw_insert_rate`, `cell.ingest_vs_raw`) are taken with
   the region's worker stopped: its outbox relay and AI enrichment of every new interaction (the raw
   run's rows included) are CPU, Postgres and Redis work that here shares two cores with the cell,
   Postgres and the load generator (in production workers are their own replicas), and whose share
   varies with the backlog it is working through. The same rounds with the worker running (started
   fresh, then behind for the whole measurement) come first, reported as `cell.*_with_worker`.
2. `GET interactions` with filters and full-text `q` over 1 million interactions in one project:
   p50/p99 of sequential requests per query shape.

`python -m bench.cell --ingest-only` (or RELAY_BENCH_INGEST_ONLY=1) runs part 1 alone, `--lists-only` part 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx

from bench.harness import MACHINE, Topology, need, project_key, result, start, wrk
from bench.router import PATH, presigned, report_body
from common.ids import uuid7
from common.signing import Actor, sign

CONCURRENCY = 32
SECONDS = 8
ROUNDS = 3
ROWS = 1_000_000


async def raw_inserts(dsn: str, project_id: uuid.UUID, body: dict[str, Any], seconds: float) -> float:
    """Rows per second asyncpg alone commits: the same three rows per report, one transaction each."""
    pool = await asyncpg.create_pool(dsn, min_size=CONCURRENCY // 2, max_size=CONCURRENCY // 2)
    assert pool is not None
    content = json.dumps(body["content"])
    logs = (json.dumps(body["logs"]["console"]), json.dumps(body["logs"]["network"]))
    context = json.dumps(body["technical_context"])
    done = 0
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            iid = uuid7()
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    """INSERT INTO interactions (id, project_id, type, source, content_text, content_json, severity,
                                                 tags, technical_context)
                       VALUES ($1, $2, 'bug', 'widget', $3, $4::jsonb, 'high', $5, $6::jsonb)""",
                    iid, project_id, body["content"]["text"], content, body["tags"], context)
                await conn.execute(
                    """INSERT INTO interaction_logs (id, project_id, interaction_id, console, network)
                       VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)""", uuid7(), project_id, iid, *logs)
                await conn.execute("INSERT INTO outbox (project_id, kind, payload) VALUES ($1, $2, $3::jsonb)",
                                   project_id, "interaction.created", json.dumps({"interaction_id": str(iid)}))
            done += 1

    began = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - began
    await pool.close()
    return done / elapsed


SEED = """
INSERT INTO interactions (id, project_id, type, source, status, severity, tags, content_text, content_json,
                          created_at, updated_at)
SELECT gen_random_uuid(), $1,
       (ARRAY['bug','feedback','chat','survey'])[1 + i % 4]::interaction_type, 'sdk',
       (ARRAY['new','triaging','in_progress','resolved','closed'])[1 + (i / 7) % 5]::interaction_status,
       (ARRAY['low','med','high','critical'])[1 + (i / 3) % 4]::severity,
       ARRAY['t' || (i % 50)],
       (ARRAY['checkout','login','upload','search','profile','billing','export','import'])[1 + i % 8]
         || ' ' || (ARRAY['fails','hangs','crashes','is slow','shows an error','loses data'])[1 + (i / 8) % 6]
         || ' on ' || (ARRAY['chrome','firefox','safari','android','ios'])[1 + (i / 48) % 5] || ' report ' || i
         || ' build ' || (i % 1000),
       '{}'::jsonb,
       now() - make_interval(secs => ($2 - i) * 2), now()
FROM generate_series(1, $2) AS i
"""

SHAPES = {
    "newest": "",
    "type+status": "type=bug&status=new",
    "tag": "tag=t7",
    "severity+created_before": "severity=critical&created_before=2099-01-01T00:00:00Z",
    "q": "q=checkout%20crashes",
    "q+type": "q=login%20slow&type=feedback",
    "q_rare": "q=report%20654321",  # one row of the million
    "q_sparse": "q=build%20417",  # one row in a thousand
    "q_disjoint": "q=checkout%20login",  # two common words that never meet: no row at all
    "user_id_none": f"user_id={uuid.UUID(int=1)}",
}


def measure_lists(topo: Topology, project: dict[str, Any], key: dict[str, Any], n: int = 150) -> dict[str, list[float]]:
    """Sequential GETs straight to the cell (signed as the router would), per query shape."""
    cell = topo.dev.topology["cells"]["us-west"]["url"]
    secret = json.loads((topo.dev.state_dir / "secrets.json").read_text())["us-west"].encode()
    actor = Actor(kind="key", project_id=project["id"], key_prefix=key["key_prefix"])
    out: dict[str, list[float]] = {}
    with httpx.Client(base_url=cell, trust_env=False, timeout=30) as client:
        for name, query in SHAPES.items():
            target = f"/v1/projects/{project['id']}/interactions?limit=50" + (f"&{query}" if query else "")
            times = []
            for i in range(n + 5):
                headers = {"Authorization": f"Bearer {key['key']}", **sign(secret, "GET", target, actor)}
                began = time.perf_counter()
                r = client.get(target, headers=headers)
                took = (time.perf_counter() - began) * 1000
                assert r.status_code == 200, r.text[:300]
                if i >= 5:
                    times.append(took)
            out[name] = times
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ingest_rounds(topo: Topology, project: dict[str, Any], key: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Raw asyncpg and cell ingest, alternating, ROUNDS times each: reports per second."""
    body = report_body()
    dsn = topo.dev.topology["cells"]["us-west"]["database_url"]
    cell_url = topo.dev.topology["cells"]["us-west"]["url"]
    auth = {"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"}
    raw_rates, ingest_rates = [], []
    for _ in range(ROUNDS):
        raw_rates.append(asyncio.run(raw_inserts(dsn, uuid.UUID(project["id"]), json.loads(body), SECONDS)))
        run = wrk(cell_url + PATH, body, auth, seconds=SECONDS, connections=CONCURRENCY,
                  per_request=presigned(topo, key, "us-west", body, SECONDS))
        assert run.errors == 0, run
        ingest_rates.append(run.rps)
    return raw_rates, ingest_rates


def report_ingest(raw_rates: list[float], ingest_rates: list[float], suffix: str = "") -> None:
    """The medians as RESULT lines named `cell.<figure><suffix>`."""
    when = " (worker running)" if suffix else " (worker stopped)"
    print(f"  raw asyncpg  {[round(r) for r in raw_rates]} reports/s{when}")
    print(f"  cell ingest  {[round(r) for r in ingest_rates]} reports/s{when}")
    raw, ingest = statistics.median(raw_rates), statistics.median(ingest_rates)
    result(f"cell.raw_insert_rate{suffix}", raw, "reports/s")
    result(f"cell.ingest_rate{suffix}", ingest, "reports/s")
    result(f"cell.ingest_vs_raw{suffix}", ingest / raw, "ratio")


def measure_ingest(topo: Topology) -> None:
    """Part 1: with the region's worker running (fresh), then with it stopped (the headline figures)."""
    project, key = project_key(topo, "us-west", ["ingest", "read"])
    key["project_id"] = project["id"]
    cell_url = topo.dev.topology["cells"]["us-west"]["url"]
    auth = {"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"}
    wrk(cell_url + PATH, report_body(), auth, seconds=2, per_request=presigned(topo, key, "us-west", report_body(), 2))
    print(f"machine: {MACHINE}; {CONCURRENCY} concurrent, {SECONDS}s x {ROUNDS}")
    report_ingest(*ingest_rounds(topo, project, key), "_with_worker")
    worker = topo.dev.part("worker[us-west]").proc
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:  # busy with the backlog; its jobs are at-least-once anyway
        worker.kill()
        worker.wait()
    report_ingest(*ingest_rounds(topo, project, key))
    topo.dev.restart("worker[us-west]")


def main(argv: Sequence[str] = ()) -> None:
    ingest_only = "--ingest-only" in argv or os.environ.get("RELAY_BENCH_INGEST_ONLY") == "1"
    need("wrk")
    topo = start("cell")
    try:
        if "--lists-only" not in argv:
            measure_ingest(topo)
        if ingest_only:
            return
        dsn = topo.dev.topology["cells"]["us-west"]["database_url"]

        big, big_key = project_key(topo, "us-west", ["read"])

        async def seed() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(SEED, uuid.UUID(big["id"]), ROWS)
                await conn.execute("ANALYZE interactions")
            finally:
                await conn.close()

        began = time.monotonic()
        asyncio.run(seed())
        print(f"  seeded {ROWS} interactions in {time.monotonic() - began:.0f}s")
        lists = measure_lists(topo, big, big_key)
        for name, times in lists.items():
            print(f"  list {name:24s} p50 {pct(times, .5):6.2f} ms  p99 {pct(times, .99):6.2f} ms")
            slug = name.replace("+", "_")
            result(f"cell.list_{slug}_p50", pct(times, .5), "ms")
            result(f"cell.list_{slug}_p99", pct(times, .99), "ms")
        result("cell.list_worst_p99", max(pct(t, .99) for t in lists.values()), "ms")
    finally:
        topo.close()


if __name__ == "__main__":
    main(sys.argv[1:])
