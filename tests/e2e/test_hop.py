"""The router → cell hop, tried as someone on the network between them would: a captured request replayed, its
body swapped, or sent late is refused with 401 and changes nothing; streamed uploads are bound by their trailer."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Any

import httpx
import msgspec
import pytest
import redis

from cell.auth import NonceBook
from common.signing import NONCE, SIGNATURE, Actor, sign, trailer
from tests.conftest import Admin, problem, sql
from tests.e2e.test_skeleton import _hop_secret

REGION = "eu-west"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200


def _captured(topo: dict[str, Any], key: dict[str, Any], project: dict[str, Any], body: bytes,
              now: float | None = None) -> dict[str, str]:
    """The headers the router sends with an ingest of `body`: what a wiretap between router and cell sees."""
    actor = Actor(kind="key", project_id=project["id"], key_prefix=key["key_prefix"])
    return {**key["h"], "content-type": "application/json",
            **sign(_hop_secret(topo, REGION), "POST", "/v1/ingest/interactions", actor, now, body=body)}


def _stored(topo: dict[str, Any], project: dict[str, Any], canary: str) -> int:
    rows = sql(topo["cells"][REGION]["database_url"],
               "SELECT count(*) AS n FROM interactions WHERE project_id = $1 AND content_json::text LIKE $2",
               uuid.UUID(project["id"]), f"%{canary}%")
    return int(rows[0]["n"])


@pytest.fixture(scope="module")
def setup(admin: Admin) -> tuple[dict[str, Any], dict[str, Any]]:
    project = admin.project(REGION)
    return project, admin.key(project, ["ingest"])


def test_a_replayed_request_is_refused(topo: dict[str, Any], setup: tuple[dict[str, Any], dict[str, Any]]) -> None:
    project, key = setup
    canary = f"replay-{secrets.token_hex(6)}"
    body = msgspec.json.encode({"type": "bug", "content": {"text": canary}})
    headers = _captured(topo, key, project, body)
    with httpx.Client(base_url=topo["cells"][REGION]["url"], trust_env=False, timeout=10) as cell:
        assert cell.post("/v1/ingest/interactions", headers=headers, content=body).status_code == 201
        assert "replayed" in problem(cell.post("/v1/ingest/interactions", headers=headers, content=body),
                                     401)["detail"]
    assert _stored(topo, project, canary) == 1
    # The nonce is shared by the cell's processes through its Redis, for the skew window.
    ttl = redis.Redis.from_url(topo["cells"][REGION]["redis_url"]).ttl(f"relay:hop-nonce:{headers[NONCE]}")
    assert 30 < ttl <= 61


def test_a_swapped_body_is_refused(topo: dict[str, Any], setup: tuple[dict[str, Any], dict[str, Any]]) -> None:
    project, key = setup
    canary, forged = f"orig-{secrets.token_hex(6)}", f"forged-{secrets.token_hex(6)}"
    original = msgspec.json.encode({"type": "bug", "content": {"text": canary}})
    swapped = msgspec.json.encode({"type": "bug", "content": {"text": forged}})
    headers = _captured(topo, key, project, original)
    with httpx.Client(base_url=topo["cells"][REGION]["url"], trust_env=False, timeout=10) as cell:
        assert "does not match" in problem(cell.post("/v1/ingest/interactions", headers=headers, content=swapped),
                                           401)["detail"]
    assert _stored(topo, project, forged) == 0


def test_a_stale_request_is_refused(topo: dict[str, Any], setup: tuple[dict[str, Any], dict[str, Any]]) -> None:
    project, key = setup
    canary = f"stale-{secrets.token_hex(6)}"
    body = msgspec.json.encode({"type": "bug", "content": {"text": canary}})
    headers = _captured(topo, key, project, body, now=time.time() - 90)
    with httpx.Client(base_url=topo["cells"][REGION]["url"], trust_env=False, timeout=10) as cell:
        assert "stale" in problem(cell.post("/v1/ingest/interactions", headers=headers, content=body), 401)["detail"]
    assert _stored(topo, project, canary) == 0


def test_a_streamed_upload_is_bound_by_its_trailer(router: httpx.Client, topo: dict[str, Any],
                                                   setup: tuple[dict[str, Any], dict[str, Any]]) -> None:
    project, key = setup
    made = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": {"text": "x"}})
    assert made.status_code == 201, made.text
    interaction = made.json()["id"]
    # Through the router (which streams and appends the trailer) an upload is stored whole.
    r = router.post(f"/v1/ingest/interactions/{interaction}/media?kind=screenshot", content=PNG,
                    headers={**key["h"], "content-type": "image/png"})
    assert r.status_code == 201 and r.json()["size_bytes"] == len(PNG), r.text
    target = f"/v1/ingest/interactions/{interaction}/media?kind=screenshot"
    secret = _hop_secret(topo, REGION)
    actor = Actor(kind="key", project_id=project["id"], key_prefix=key["key_prefix"])
    headers = {**key["h"], "content-type": "image/png", **sign(secret, "POST", target, actor, body=None)}
    seal = trailer(secret, headers[SIGNATURE], hashlib.sha256(PNG).digest())
    tampered = PNG[:-1] + b"\x01"
    with httpx.Client(base_url=topo["cells"][REGION]["url"], trust_env=False, timeout=10) as cell:
        # The same headers and trailer over other bytes, then over the bytes cut short: refused, nothing kept.
        problem(cell.post(target, headers=headers, content=tampered + seal), 401)
        headers = {**headers, **sign(secret, "POST", target, actor, body=None)}
        seal = trailer(secret, headers[SIGNATURE], hashlib.sha256(PNG).digest())
        problem(cell.post(target, headers=headers, content=PNG[:100] + seal), 401)
    rows = sql(topo["cells"][REGION]["database_url"], "SELECT size_bytes FROM media WHERE interaction_id = $1",
               uuid.UUID(interaction))
    assert [row["size_bytes"] for row in rows] == [len(PNG)]


async def test_nonces_are_remembered_without_redis() -> None:
    book = NonceBook(limit=3)
    book.attach(redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5))  # nothing listens there
    try:
        assert await book.first_use("a" * 32)
        assert not await book.first_use("a" * 32)
        for n in "bcd":
            assert await book.first_use(n * 32)
        assert len(book._seen) == 3  # bounded: the oldest made way
    finally:
        await book.redis.aclose()  # type: ignore[union-attr]
