"""What verifying a key costs through the router: a fresh key's first request and a warm key's, bcrypt vs digest.

Before keyed digests, a cell checked each key against its bcrypt hash: the first request of every key
(per cell process) paid a bcrypt, about 144 ms through the router against 11 ms warm. Now the router
checks the key's HMAC-SHA256 digest in memory and the cell checks its own, so a fresh key costs what a warm
one does. A key from before digests still pays bcrypt once, on its first use (its cell verifies it for
the router and both record the digest): measured here with keys planted the way the old code stored them.
A made-up secret on a real prefix is refused at the edge: its cost is measured too.

Each figure is the median over KEYS keys (WARM requests each for the warm figures), on one ~2 KB ingest.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import bcrypt

from bench.harness import MACHINE, Topology, project_key, result, start
from bench.router import PATH, report_body
from common.ids import uuid7
from common.keys import new_key, new_key_prefix
from tests.conftest import sql

KEYS = 8
WARM = 5


def _timed(send: Callable[[], int], expect: int) -> float:
    began = time.perf_counter()
    status = send()
    took = (time.perf_counter() - began) * 1000
    assert status == expect, status
    return took


def _legacy_key(topo: Topology, project: dict[str, Any]) -> str:
    """A key as stored before digests: bcrypt (10 rounds) in the cell, prefix only in the directory."""
    key_id, key = str(uuid7()), new_key(new_key_prefix("us"))
    hashed = bcrypt.hashpw(key.encode(), bcrypt.gensalt(rounds=10)).decode()
    sql(topo.dev.topology["cells"]["us-west"]["database_url"],
        "INSERT INTO api_keys (id, project_id, key_hash, key_prefix, name, scopes) VALUES ($1, $2, $3, $4, 'b', $5)",
        key_id, project["id"], hashed, key[:12], ["ingest"])
    sql(topo.dev.topology["router"]["database_url"],
        "INSERT INTO key_directory (key_prefix, key_id, project_id, region, pending) VALUES ($1, $2, $3, $4, false)",
        key[:12], key_id, project["id"], "us-west")
    return key


def main() -> None:
    topo = start("keys")
    try:
        body = report_body()
        project, _ = project_key(topo, "us-west", ["ingest"])

        def ingest(key: str) -> Callable[[], int]:
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            return lambda: topo.router.post(PATH, content=body, headers=headers).status_code

        figures: dict[str, list[float]] = {"digest_first": [], "digest_warm": [], "bcrypt_first": [],
                                           "bcrypt_warm": [], "forged": []}
        for _ in range(KEYS):
            fresh = topo.router.post(f"/v1/projects/{project['id']}/api-keys", headers=topo.admin,
                                     json={"name": "bench", "scopes": ["ingest"]}).json()["key"]
            figures["digest_first"].append(_timed(ingest(fresh), 201))
            figures["digest_warm"] += [_timed(ingest(fresh), 201) for _ in range(WARM)]
            old = _legacy_key(topo, project)
            figures["bcrypt_first"].append(_timed(ingest(old), 201))
            figures["bcrypt_warm"] += [_timed(ingest(old), 201) for _ in range(WARM)]
            figures["forged"].append(_timed(ingest(fresh[:13] + "Z" * 32), 401))
        print(f"machine: {MACHINE}; {KEYS} keys, {WARM} warm requests each, body {len(body)} bytes")
        result("keys.digest_fresh_key_first_request", statistics.median(figures["digest_first"]), "ms")
        result("keys.digest_warm_key_request", statistics.median(figures["digest_warm"]), "ms")
        result("keys.bcrypt_key_first_request", statistics.median(figures["bcrypt_first"]), "ms")
        result("keys.bcrypt_key_after_upgrade_request", statistics.median(figures["bcrypt_warm"]), "ms")
        result("keys.made_up_secret_refusal", statistics.median(figures["forged"]), "ms")
    finally:
        topo.close()


if __name__ == "__main__":
    main()
