"""The SDK when things go wrong (API.md, "The browser SDK" and "Browsers (CORS)"): a report made offline
arrives exactly once, after going back online and after a reload; a 503 with Retry-After is waited out; a
hostile host stylesheet does not break the widget (nor the widget the page); a project's allowed_origins
refuses a page on another origin, and the page can read why."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from cell.auth import PLACEMENT_TTL
from tests.conftest import Admin, Stack, until
from tests.sdk.browser import HostSite, shop_page


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1280, "height": 800})
    yield opened
    opened.close()


def _stored(relay: httpx.Client, owner: Admin, project: dict[str, Any]) -> list[dict[str, Any]]:
    r = relay.get(f"/v1/projects/{project['id']}/interactions", headers=owner.h)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _open(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("window.relayReady === true")
    return page


def test_offline_report_arrives_once(sdk_stack: Stack, relay: httpx.Client, owner: Admin, host: HostSite,
                                     context: BrowserContext) -> None:
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("us-west")
    key = owner.key(project, ["ingest"])
    host.pages["/offline"] = shop_page(router, key["key"])
    page = _open(context, host.origin + "/offline")

    context.set_offline(True)
    first = page.evaluate("Relay.report({type: 'bug', text: 'written on a train'})")
    time.sleep(1.5)
    assert _stored(relay, owner, project) == []
    context.set_offline(False)
    stored = until(lambda: _stored(relay, owner, project), 30, "the offline report after going online")
    assert [i["id"] for i in stored] == [first]
    page.reload()  # what the outbox had is gone from it: nothing is sent again
    page.wait_for_function("window.relayReady === true")
    time.sleep(2)
    assert [i["id"] for i in _stored(relay, owner, project)] == [first]

    # Made offline, the page closed before the network came back: the next page sends it.
    context.set_offline(True)
    second = page.evaluate("Relay.report({type: 'feedback', text: 'queued across a reload'})")
    page.close()
    context.set_offline(False)
    assert len(_stored(relay, owner, project)) == 1
    again = _open(context, host.origin + "/offline")
    until(lambda: len(_stored(relay, owner, project)) == 2, 30, "the queued report after a reload")
    time.sleep(2)
    stored = _stored(relay, owner, project)
    assert sorted(i["id"] for i in stored) == sorted([first, second])
    assert {i["content"]["text"] for i in stored} == {"written on a train", "queued across a reload"}
    assert again.evaluate("indexedDB.databases().then(d => d.map(x => x.name))") == ["relay-sdk"]


def test_503_retry_after_is_honoured(sdk_stack: Stack, relay: httpx.Client, owner: Admin, host: HostSite,
                                     context: BrowserContext) -> None:
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("eu-west")
    key = owner.key(project, ["ingest"])
    host.pages["/busy"] = shop_page(router, key["key"])
    page = _open(context, host.origin + "/busy")
    tries: list[float] = []

    def busy_once(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        tries.append(time.monotonic())
        if len(tries) == 1:
            route.fulfill(status=503, headers={"Retry-After": "3", "Access-Control-Allow-Origin": host.origin,
                                               "Access-Control-Expose-Headers": "Retry-After",
                                               "Content-Type": "application/problem+json"},
                          body='{"type":"about:blank","title":"Service Unavailable","status":503}')
        else:
            route.continue_()

    page.route(f"{router}/v1/ingest/interactions", busy_once)
    sent = page.evaluate("Relay.report({type: 'bug', text: 'while Relay was busy'})")
    # Route handlers run while Playwright is called: wait in the page, not in time.sleep.
    stored = until(lambda: page.wait_for_timeout(200) or _stored(relay, owner, project), 30,
                   "the report after Retry-After", every=0)
    assert [i["id"] for i in stored] == [sent]
    assert len(tries) == 2 and tries[1] - tries[0] >= 3.0, tries


HOSTILE = """<style>
relay-widget { display: none !important; position: static !important; opacity: 0 !important;
               visibility: hidden !important; transform: scale(0) !important; }
* { font-size: 48px !important; color: lime !important; font-family: monospace !important; }
button { background: red !important; border: 9px solid blue !important; }
.dialog, .launcher, [role=dialog] { display: none !important; }
</style><button class="launcher" id="own">The shop's own button</button>"""


def test_shadow_root_survives_a_hostile_stylesheet(sdk_stack: Stack, owner: Admin, host: HostSite,
                                                   context: BrowserContext) -> None:
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("us-west")
    key = owner.key(project, ["ingest"])
    host.pages["/hostile"] = shop_page(router, key["key"], body=HOSTILE)
    page = _open(context, host.origin + "/hostile")
    launcher = page.get_by_role("button", name="Feedback")
    expect(launcher).to_be_visible()
    font = launcher.evaluate("el => getComputedStyle(el).fontSize")
    assert font == "14px", font
    launcher.click()
    dialog = page.get_by_role("dialog", name="Send feedback")
    expect(dialog).to_be_visible()
    box = dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 1280 and box["y"] >= 0
    expect(page.get_by_label("What happened?")).to_be_visible()
    # And the widget's styles stay inside: the shop's own `.launcher` keeps the shop's look.
    own = page.locator("#own")
    assert own.evaluate("el => getComputedStyle(el).display") == "none"
    assert page.locator("h1").evaluate("el => getComputedStyle(el).fontSize") == "48px"


def test_allowed_origins_refuse_the_page(sdk_stack: Stack, relay: httpx.Client, owner: Admin, host: HostSite,
                                         context: BrowserContext) -> None:
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("eu-west")
    key = owner.key(project, ["ingest"])
    r = relay.patch(f"/v1/projects/{project['id']}/settings", headers=owner.h,
                    json={"allowed_origins": ["https://app.example.com"]})
    assert r.status_code == 200, r.text
    time.sleep(PLACEMENT_TTL)
    host.pages["/elsewhere"] = shop_page(router, key["key"])
    page = _open(context, host.origin + "/elsewhere")
    error = page.evaluate("Relay.report({type: 'bug', text: 'from the wrong site'}).then(() => null, e => e.message)")
    assert error is not None and "allowed_origins" in error, error
    page.get_by_role("button", name="Feedback").click()
    page.get_by_label("What happened?").fill("still the wrong site")
    page.get_by_label("Include screenshot").uncheck()
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Could not send")
    assert _stored(relay, owner, project) == []
