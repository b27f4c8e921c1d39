"""Project secrets sealed like the other secrets, and a cell key that can be rotated.

On a private system: a project's secret (conversation tokens, ip_hash) is never stored in plain; a plain
one from before migration 0017 is sealed when the cell starts and keeps its value (tokens issued with it
still work); then the cell's key ring gets a new key in front, old values keep opening, `relay secrets
rotate` re-seals every sealed value (project, identity and webhook secrets) with it, and the old key can go.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from cell.chat import token
from tests.conftest import Admin, Stack, sql
from tests.services import StorePostgres

REGION = "us-west"


def _rows(topo: dict[str, Any], query: str, *args: Any) -> list[Any]:
    return sql(topo["cells"][REGION]["database_url"], query, *args)


def _rotate(stack: Stack, ring: str) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")} | {"RELAY_SECRET_KEY": ring}
    done = subprocess.run([sys.executable, "-m", "relay", "secrets", "rotate", "--region", REGION, "--json",
                           "--state-dir", str(stack.dev.state_dir)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return {row["kind"]: row["resealed"] for row in json.loads(done.stdout)}


def _restart(stack: Stack, ring: str) -> httpx.Client:
    stack.dev.stop()
    stack.dev.cell_env = {**stack.dev.cell_env, "RELAY_SECRET_KEY": ring}
    stack.dev.start()
    return httpx.Client(base_url=stack.dev.topology["router"]["url"], timeout=30, trust_env=False)


def test_project_secrets_are_sealed_and_the_key_rotates(pg: StorePostgres, scratch: Path) -> None:
    stack = Stack(pg, scratch, "secrets")
    try:
        topo = stack.dev.topology
        router = httpx.Client(base_url=topo["router"]["url"], timeout=30, trust_env=False)
        admin = Admin(router)
        project = admin.project(REGION)
        pid = uuid.UUID(project["id"])
        key = admin.key(project, ["ingest"])
        [row] = _rows(topo, "SELECT secret, sealed_secret FROM projects WHERE id = $1", pid)
        assert row["secret"] is None and row["sealed_secret"].startswith("v1:")

        # A project from before 0017: its plain secret, and a conversation token made with it.
        plain = secrets.token_bytes(32)
        started = router.post("/v1/ingest/conversations", headers=key["h"],
                              json={"session_id": str(uuid.uuid4()), "body": "hello"})
        assert started.status_code == 201, started.text
        conversation = uuid.UUID(started.json()["id"])
        _rows(topo, "UPDATE projects SET secret = $2, sealed_secret = NULL WHERE id = $1", pid, plain)
        old_token = token.issue(plain, conversation)
        webhook = router.post(f"/v1/projects/{pid}/webhooks", headers=admin.h,
                              json={"url": "http://127.0.0.1:9/hook", "events": ["interaction.created"]})
        assert webhook.status_code == 201, webhook.text
        made = router.post(f"/v1/projects/{pid}/identity-secret", headers=admin.h)
        assert made.status_code == 201, made.text
        identity = made.json()["secret"]
        required = router.patch(f"/v1/projects/{pid}/settings", headers=admin.h,
                                json={"identity_verification": "required"})
        assert required.status_code == 200, required.text

        def proven(secret: str) -> int:
            user = f"u-{secrets.token_hex(4)}"
            user_hash = hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()
            return router.post("/v1/ingest/interactions", headers=key["h"], json={
                "type": "bug", "content": {"text": "x"}, "user": {"external_id": user, "user_hash": user_hash}},
            ).status_code

        # A new key in front of the ring: the cell seals the plain secret at start, with the newest key.
        first = json.loads((stack.dev.state_dir / "secrets.json").read_text())[f"{REGION}:secret_key"]
        ring = f"v2:{secrets.token_urlsafe(32)},v1:{first}"
        router.close()
        router = _restart(stack, ring)
        [row] = _rows(topo, "SELECT secret, sealed_secret FROM projects WHERE id = $1", pid)
        assert row["secret"] is None and row["sealed_secret"].startswith("v2:")
        assert plain.hex() not in json.dumps([dict(r) for r in _rows(topo, "SELECT * FROM projects")], default=str)

        def messages(tok: str) -> int:
            return router.get(f"/v1/ingest/conversations/{conversation}/messages",
                              headers={**key["h"], "X-Relay-Conversation-Token": tok}).status_code

        assert messages(old_token) == 200  # same secret, now sealed
        assert messages(token.issue(secrets.token_bytes(32), conversation)) in (401, 403, 404)
        [hook] = _rows(topo, "SELECT secret FROM webhooks WHERE project_id = $1", pid)
        assert hook["secret"].startswith("v1:")  # old values still open with v1 …

        # … until `relay secrets rotate` re-seals every one of them with v2; then v1 can leave the ring.
        counts = _rotate(stack, ring)
        assert counts["webhook secrets"] >= 1 and counts["identity secrets"] >= 1
        again = _rotate(stack, ring)
        assert again["webhook secrets"] == again["identity secrets"] == 0  # idempotent
        [project_row] = _rows(topo, "SELECT identity_secret FROM projects WHERE id = $1", pid)
        assert project_row["identity_secret"].startswith("v2:")
        [hook] = _rows(topo, "SELECT secret FROM webhooks WHERE project_id = $1", pid)
        assert hook["secret"].startswith("v2:")
        router.close()
        router = _restart(stack, ring.split(",")[0])  # the new key alone
        assert messages(old_token) == 200
        assert proven(identity) == 201 and proven("ris_not-the-secret") == 401  # still verifies, with v2 alone
        shown = router.get(f"/v1/projects/{pid}/webhooks/{webhook.json()['id']}", headers=admin.h)
        assert shown.status_code == 200, shown.text
        router.close()
    finally:
        stack.close()
