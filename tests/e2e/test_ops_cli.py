"""The operator's commands against a running system: regions, projects, keys, queue, schema status."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from relay.devstack import DevStack
from tests.conftest import Admin


def relay(stack: DevStack, *args: str) -> tuple[int, Any]:
    out = subprocess.run([sys.executable, "-m", "relay", *args, "--state-dir", str(stack.state_dir), "--json"],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert not out.stderr.strip() or out.returncode != 0, out.stderr
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else None


def test_operator_commands(stack: DevStack, admin: Admin) -> None:
    project = admin.project("eu-west")
    key = admin.key(project, ["ingest"])
    code, regions = relay(stack, "regions")
    assert code == 0 and {r["name"]: r["status"] for r in regions} == {"us-west": "ok", "eu-west": "ok"}
    code, projects = relay(stack, "projects", "--region", "eu-west")
    mine = [p for p in projects if p["id"] == project["id"]]
    assert code == 0 and mine and mine[0]["region"] == "eu-west" and mine[0]["state"] == "active"
    assert mine[0]["keys"] == 1 and all(p["region"] == "eu-west" for p in projects)
    code, keys = relay(stack, "keys", key["key_prefix"])
    assert code == 0 and keys[0]["region"] == "eu-west" and keys[0]["revoked"] is False
    assert key["key"] not in json.dumps(keys)  # never the secret
    code, none = relay(stack, "keys", "rk_zz_")
    assert code == 1 and none == []
    code, queue = relay(stack, "queue")
    assert code == 0 and {q["region"] for q in queue} == {"us-west", "eu-west"}
    assert all(isinstance(q["outbox_pending"], int) and q["workers"] >= 1 for q in queue)
    code, schema = relay(stack, "db", "status", "--all")
    assert code == 0 and {s["store"] for s in schema} == {"router", "us-west", "eu-west"}
    assert all(s["pending"] == 0 and s["applied"] >= 1 for s in schema)
