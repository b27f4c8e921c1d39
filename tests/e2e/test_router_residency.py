"""The router persists and logs no customer content: canaries sent every way leave no trace in it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from relay.devstack import DevStack
from tests.conftest import Admin, sql


def test_canaries_never_reach_router_logs_spans_redis_or_db(stack: DevStack, router: httpx.Client,
                                                            admin: Admin) -> None:
    canary = f"canary{secrets.token_hex(8)}"
    project = admin.project("eu-west")
    key = admin.key(project, ["ingest", "read"])
    h = {**key["h"], "User-Agent": f"ua-{canary}", "X-Debug": canary, "X-Forwarded-For": "198.51.100.23"}
    body = {"type": "bug", "content": {"text": f"text {canary}", "title": canary},
            "user": {"external_id": f"user-{canary}", "email": f"{canary}@example.com"},
            "technical_context": {"url": f"https://app.example.com/?q={canary}"}}
    assert router.post(f"/v1/ingest/interactions?trace={canary}", headers=h, json=body).status_code == 201
    assert router.post("/v1/ingest/interactions", headers=h, json={"type": canary}).status_code == 422
    bad = router.post("/v1/ingest/interactions", headers={**h, "Content-Type": "application/json"},
                      content=f'{{"type": "{canary}'.encode())
    assert bad.status_code == 400
    listed = router.get(f"/v1/projects/{project['id']}/interactions", params={"q": canary}, headers=key["h"])
    assert listed.status_code == 200 and len(listed.json()["data"]) == 1
    assert router.post("/v1/auth/login", json={"email": f"{canary}@example.com", "password": "x" * 12}
                       ).status_code == 401
    time.sleep(1.0)  # spans are exported in batches every 200 ms

    state = stack.state_dir.parent
    router_log = (state / "logs" / "router.log").read_text()
    router_spans = (state / "traces" / "router.jsonl").read_text()
    # The evidence is there (so this test cannot pass on empty files) …
    assert '"message": "request"' in router_log and '"relay.region": "eu-west"' in router_log
    assert '"name": "router.forward"' in router_spans and key["key_prefix"] in router_spans
    # … and the canary, the end user's identity and the client's address are not.
    for needle in (canary, "198.51.100.23"):
        assert needle not in router_log, needle
        assert needle not in router_spans, needle
    for line in (router_log + router_spans).splitlines():
        if line.startswith("{"):
            fields = json.loads(line)
            fields.update(fields.get("attributes", {}))
            assert not [k for k in fields if "client" in k or k.endswith((".ip", "address"))], line
    assert not _redis_hits(stack.topology["router"]["redis_url"], canary)
    tables = sql(stack.topology["router"]["database_url"],
                 "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    for t in tables:
        rows = sql(stack.topology["router"]["database_url"],
                   f'SELECT count(*) AS n FROM "{t["table_name"]}" x WHERE x::text LIKE $1', f"%{canary}%")
        assert rows[0]["n"] == 0, t["table_name"]
    # The data itself is where it belongs: in the project's cell.
    hits = sql(stack.topology["cells"]["eu-west"]["database_url"],
               "SELECT count(*) AS n FROM interactions WHERE content_text LIKE $1", f"%{canary}%")
    assert hits[0]["n"] == 1


def _redis_hits(url: str, needle: str) -> list[str]:
    async def scan() -> list[str]:
        client: Any = aioredis.Redis.from_url(url)
        found: list[str] = []
        try:
            async for name in client.scan_iter(count=500):
                kind = (await client.type(name)).decode()
                if kind == "string":
                    values = [await client.get(name)]
                elif kind == "hash":
                    values = list((await client.hgetall(name)).values())
                elif kind == "list":
                    values = await client.lrange(name, 0, -1)
                elif kind == "zset":
                    values = await client.zrange(name, 0, -1)
                elif kind == "set":
                    values = list(await client.smembers(name))
                else:
                    values = []
                if needle.encode() in name or any(v and needle.encode() in v for v in values):
                    found.append(name.decode())
        finally:
            await client.aclose()
        return found

    return asyncio.run(scan())
