"""Session replay from the browser (API.md, "The browser SDK"; issue 12): recorded across a navigation in
one tab as one replay, the page's inputs masked in the browser — a typed password is in no stored event,
neither in what the API serves nor in the region's object store — and the project's selector privacy rules
keep an element's text and attributes in the page."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, expect

from tests.conftest import Admin, Stack, until
from tests.sdk.browser import HostSite

PASSWORD = "hunter2-Zebra-99"
SECRET_TEXT = "Account 7731-secret"



def _page(router: str, key: str, title: str, body: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head><body>
<h1>{title}</h1>{body}
<script src="{router}/sdk/v1/relay.js"></script>
<script>Relay.init({{key: "{key}", replay: {{sampleRate: 1}}}}).then(() => {{ window.relayReady = true; }});</script>
</body></html>"""


def test_replay_across_a_navigation_never_holds_the_password(sdk_stack: Stack, relay: httpx.Client, owner: Admin,
                                                             host: HostSite, browser: Browser) -> None:
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("eu-west")
    key = owner.key(project, ["ingest"])
    r = relay.post(f"/v1/projects/{project['id']}/privacy-rules", headers=owner.h,
                   json={"name": "account numbers", "rule": {"type": "selector", "selector": ".account"}})
    assert r.status_code == 201, r.text
    host.pages["/login"] = _page(router, key["key"], "Sign in", f"""
<p class="account" title="{SECRET_TEXT}">{SECRET_TEXT} <a href="mailto:7731@example.com">write</a>
<img alt="{SECRET_TEXT}" src="/avatar.png?account=7731"></p>
<label for="pw">Password</label><input id="pw" type="password">
<label for="name">Name</label><input id="name" type="text">
<a href="/cart" id="next">To the cart</a>""")
    host.pages["/cart"] = _page(router, key["key"], "Your cart", "<p>Two mugs</p><button id=buy>Buy</button>")

    context = browser.new_context(viewport={"width": 1024, "height": 700})
    try:
        page = context.new_page()
        chunks_sent: list[tuple[str, str | None]] = []  # (index, Content-Encoding) of each chunk request
        page.on("request", lambda request: chunks_sent.append(
            (request.url.split("/chunks/")[1].split("?")[0], request.headers.get("content-encoding")))
            if "/chunks/" in request.url and request.method == "POST" else None)
        page.goto(host.origin + "/login")
        page.wait_for_function("window.relayReady === true")
        page.wait_for_timeout(300)
        page.locator("#pw").type(PASSWORD)
        page.locator("#name").type("Jane Roe")
        page.wait_for_timeout(500)
        page.locator("#next").click()
        page.wait_for_url("**/cart")
        page.wait_for_function("window.relayReady === true")
        page.locator("#buy").click()
        page.wait_for_timeout(500)
        page.evaluate("Relay.shutdown()")  # ends the replay: its last chunk and `finish` go out
        replays = until(lambda: page.wait_for_timeout(200) or [
            x for x in relay.get(f"/v1/projects/{project['id']}/replays", headers=owner.h).json()["data"]
            if x["status"] == "ready"], 60, "the finished replay", every=0)
    finally:
        context.close()

    # Chunks leave gzipped (CompressionStream), but for a page's last one, sent raw on `pagehide` with
    # keepalive (Playwright does not see that request: the first page's chunk is known by its events below).
    assert len(replays) == 1, replays
    replay = replays[0]
    assert "gzip" in {encoding for _, encoding in chunks_sent}, chunks_sent
    assert replay["chunk_count"] >= 2, replay  # a chunk a page at least
    events = relay.get(f"/v1/projects/{project['id']}/replays/{replay['id']}/events", headers=owner.h)
    assert events.status_code == 200
    stored: list[dict[str, Any]] = events.json()
    hrefs = [e["data"]["href"] for e in stored if e["type"] == 4]  # rrweb Meta: one per page recorded
    assert hrefs == [host.origin + "/login", host.origin + "/cart"], hrefs
    assert replay["event_count"] == len(stored) and sum(1 for e in stored if e["type"] == 2) == 2  # snapshots
    text = json.dumps(stored)
    assert PASSWORD not in text and "hunter2" not in text
    assert "Jane Roe" not in text  # every input masked, not only passwords
    assert "7731" not in text  # the project's selector rule blocked it in the browser: text, title, alt, href, src
    assert "Two mugs" in text  # what is not masked is recorded
    # Nor anywhere in the region's object store, chunk by chunk as the browser sent them.
    store = Path(sdk_stack.dev.topology["cells"]["eu-west"]["object_store"].removeprefix("file://"))
    chunks = [p for p in (store / "projects" / project["id"]).rglob("*") if p.is_file()]
    assert chunks
    for chunk in chunks:
        raw = chunk.read_bytes()
        body = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        assert b"hunter2" not in body and b"7731" not in body

    # The dashboard's player (sdk/js/README.md) plays them back: the first page as it was recorded.
    host.pages["/player"] = f"""<!doctype html><html><body><div id="player" style="width:900px"></div>
<script src="{router}/sdk/v1/player.js"></script></body></html>"""
    context = browser.new_context(viewport={"width": 1024, "height": 800})
    try:
        page = context.new_page()
        page.goto(host.origin + "/player")
        page.evaluate("events => { window.played = RelayPlayer.mount(document.getElementById('player'), events); }",
                      stored)
        heading = page.frame_locator("#player iframe").locator("h1")
        expect(heading).to_have_text("Sign in")
        assert page.evaluate("typeof window.played.pause === 'function'")
    finally:
        context.close()
