"""The SDK's files at the global endpoint (API.md, "The browser SDK"): /sdk/v1/relay.js and relay.mjs as
JavaScript any origin may load, cached for long and revalidated by ETag; the chunks they load on demand;
the replay player the dashboard serves; the demo shop; problems for anything else."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx

from router.sdk import DEFAULT_DIR
from tests.conftest import problem

EAGER_BUDGET, REPLAY_BUDGET = 15 * 1024, 35 * 1024


def test_the_sdk_files(relay: httpx.Client) -> None:
    for name in ("relay.js", "relay.mjs", "replay.mjs", "screenshot.mjs", "extras.mjs", "player.js"):
        r = relay.get(f"/sdk/v1/{name}", headers={"Origin": "https://shop.example.com"})
        assert r.status_code == 200, (name, r.text[:200])
        assert r.headers["content-type"].startswith("text/javascript")
        assert r.headers["access-control-allow-origin"] == "*"
        assert "max-age=86400" in r.headers["cache-control"] and r.headers["etag"]
        assert r.content == (DEFAULT_DIR / name).read_bytes()
        again = relay.get(f"/sdk/v1/{name}", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    script = relay.get("/sdk/v1/relay.js").text
    assert "window.Relay=" in script  # a classic script defining window.Relay (behaviour: the browser tests)
    module = relay.get("/sdk/v1/relay.mjs").text
    assert "export" in module and "import.meta" not in script
    assert "RelayPlayer" in relay.get("/sdk/v1/player.js").text

    demo = relay.get("/sdk/v1/demo")
    assert demo.status_code == 200 and demo.headers["content-type"].startswith("text/html")
    assert 'src="relay.js"' in demo.text and "?key=" in demo.text

    problem(relay.get("/sdk/v1/nothing.js"), 404)
    problem(relay.get("/sdk/v1/../../pyproject.toml"), 404)
    problem(relay.get("/sdk/v2/relay.js"), 404)
    problem(relay.post("/sdk/v1/relay.js"), 405)


def test_sizes_within_budget() -> None:
    def gz(name: str) -> int:
        return len(gzip.compress((Path(DEFAULT_DIR) / name).read_bytes(), 9))

    assert max(gz("relay.js"), gz("relay.mjs")) <= EAGER_BUDGET
    assert gz("replay.mjs") <= REPLAY_BUDGET
