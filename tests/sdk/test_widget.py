"""The SDK in a real browser (API.md, "The browser SDK"): a customer's page on another origin loads
/sdk/v1/relay.js; the user reports a problem through the widget; the team reads it all back through the
management API — words, logs, technical context, and a PNG screenshot stored in the project's region only."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, FilePayload, Page, expect

from tests.conftest import Admin, Stack, until
from tests.sdk.browser import SHOTS, HostSite, shop_page


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    yield opened
    context.close()


def _project(owner: Admin, region: str) -> tuple[dict[str, Any], dict[str, Any]]:
    project = owner.project(region)
    return project, owner.key(project, ["ingest"])


def _interactions(relay: httpx.Client, owner: Admin, project: dict[str, Any]) -> list[dict[str, Any]]:
    r = relay.get(f"/v1/projects/{project['id']}/interactions", headers=owner.h)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_report_through_the_widget(sdk_stack: Stack, relay: httpx.Client, owner: Admin, host: HostSite,
                                   page: Page) -> None:
    router = sdk_stack.dev.topology["router"]["url"]
    project, key = _project(owner, "eu-west")
    rule = relay.post(f"/v1/projects/{project['id']}/privacy-rules", headers=owner.h,
                      json={"name": "emails on the page", "rule": {"type": "selector", "selector": ".account-email"}})
    assert rule.status_code == 201, rule.text
    host.pages["/shop"] = shop_page(router, key["key"])
    page.goto(host.origin + "/shop")
    page.wait_for_function("window.relayReady === true")
    page.evaluate("""async () => {
        console.log("hello from the shop", {cart: 3});
        console.warn("stock is low");
        await fetch("/api/cart?token=s3cr3t-token&item=7").catch(() => {});
        await new Promise((done) => {
            const xhr = new XMLHttpRequest();
            xhr.open("POST", "/api/pay?card=4242");
            xhr.onloadend = done;
            xhr.send("card=4242424242424242");
        });
        setTimeout(() => { throw new Error("checkout exploded"); });
        await new Promise((r) => setTimeout(r, 50));
    }""")

    page.get_by_role("button", name="Feedback").click()
    dialog = page.get_by_role("dialog", name="Send feedback")
    expect(dialog).to_be_visible()
    expect(page.get_by_label("What happened?")).to_be_focused()
    page.get_by_label("What happened?").fill("The checkout button does nothing")
    expect(page.get_by_label("Include screenshot")).to_be_checked()
    page.screenshot(path=str(SHOTS / "widget-desktop.png"))
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_text("Thanks", exact=True)).to_be_visible(timeout=20_000)

    stored = until(lambda: _interactions(relay, owner, project), 20, "the report")
    assert len(stored) == 1
    detail = relay.get(f"/v1/projects/{project['id']}/interactions/{stored[0]['id']}", headers=owner.h).json()
    assert detail["type"] == "bug" and detail["source"] == "widget"
    assert detail["content"]["text"] == "The checkout button does nothing"
    assert detail["session_id"]
    console = detail["logs"]["console"]
    assert any(e["level"] == "log" and "hello from the shop" in e["message"] and '"cart":3' in e["message"]
               for e in console), console
    assert any(e["level"] == "warn" and e["message"] == "stock is low" for e in console)
    network = detail["logs"]["network"]
    cart = [e for e in network if "/api/cart" in e["url"]]
    assert len(cart) == 1 and cart[0]["status"] == 404 and cart[0]["method"] == "GET", network
    assert cart[0]["url"] == f"{host.origin}/api/cart?token=&item=" and cart[0]["duration_ms"] >= 0
    pay = [e for e in network if "/api/pay" in e["url"]]
    assert pay == [{**pay[0], "method": "POST", "url": f"{host.origin}/api/pay?card=", "status": 404}], network
    assert "4242" not in json.dumps(network)
    assert not any("/v1/ingest/" in e["url"] or "/sdk/" in e["url"] for e in network)  # the SDK's own calls
    assert "s3cr3t" not in json.dumps(detail)
    errors = detail["logs"]["errors"]
    assert any("checkout exploded" in e["message"] and "Error" in (e.get("stack") or "") for e in errors), errors
    context = detail["technical_context"]
    assert context["url"] == f"{host.origin}/shop" and "Chrome" in context["user_agent"]
    assert context["viewport"]["width"] == 1280

    shots = until(lambda: relay.get(f"/v1/projects/{project['id']}/interactions/{detail['id']}/media",
                                    headers=owner.h).json()["data"], 20, "the screenshot")
    assert [(m["kind"], m["content_type"]) for m in shots] == [("screenshot", "image/png")]
    png = relay.get(f"/v1/projects/{project['id']}/media/{shots[0]['id']}/content", headers=owner.h)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    (SHOTS / "report-screenshot.png").write_bytes(png.content)
    # Drawn back in the page: the card input and the element under the project's selector are blanked grey.
    colours = page.evaluate("""async (b64) => {
        const img = new Image();
        img.src = "data:image/png;base64," + b64;
        await img.decode();
        const canvas = document.createElement("canvas");
        canvas.width = img.width; canvas.height = img.height;
        const g = canvas.getContext("2d");
        g.drawImage(img, 0, 0);
        const scale = img.width / innerWidth;
        const at = (sel) => {  // every distinct colour inside the element's box, borders left out
            const r = (typeof sel === "string" ? document.querySelector(sel) : sel).getBoundingClientRect();
            const x = Math.round((r.left + 3) * scale), y = Math.round((r.top + 3) * scale);
            const w = Math.round((r.width - 6) * scale), h = Math.round((r.height - 6) * scale);
            const data = g.getImageData(x, y, w, h).data, seen = new Set();
            for (let i = 0; i < data.length; i += 4) seen.add(data.slice(i, i + 4).join(","));
            return [...seen];
        };
        const shadow = document.querySelector("relay-widget").shadowRoot;
        return {card: at("#card"), email: at(".account-email"), heading: at("h1"), size: [img.width, img.height],
                launcher: at(shadow.querySelector(".launcher")), dialog: at(shadow.querySelector(".dialog"))};
    }""", base64.b64encode(png.content).decode())
    assert colours["card"] == colours["email"] == ["156,163,175,255"], colours  # the mask's grey, nothing else
    assert len(colours["heading"]) > 1  # what is not masked is drawn
    assert colours["launcher"] == colours["dialog"] == ["255,255,255,255"], colours  # the widget left out
    assert colours["size"][0] == 1280    # Stored in the project's region only.
    stores = {region: Path(cell["object_store"].removeprefix("file://"))
              for region, cell in sdk_stack.dev.topology["cells"].items()}
    assert any((stores["eu-west"] / "projects" / project["id"]).rglob("*"))
    assert not (stores["us-west"] / "projects" / project["id"]).exists()


def test_widget_at_phone_width_and_keyboard(sdk_stack: Stack, owner: Admin, host: HostSite,
                                            browser: Browser) -> None:
    router = sdk_stack.dev.topology["router"]["url"]
    _, key = _project(owner, "us-west")
    host.pages["/phone"] = shop_page(router, key["key"], options=', widget: {theme: "dark"}')
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(host.origin + "/phone")
        page.wait_for_function("window.relayReady === true")
        launcher = page.get_by_role("button", name="Feedback")
        launcher.focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("dialog", name="Send feedback")).to_be_visible()
        box = page.get_by_role("dialog", name="Send feedback").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        page.screenshot(path=str(SHOTS / "widget-390.png"))
        # Focus stays in the dialog (not merely the widget, whose launcher is outside it): tabbing past the
        # last control comes back to the first, and Shift+Tab from the first goes to the last.
        where = """() => {
            const host = document.activeElement;
            const el = host?.localName === 'relay-widget' ? host.shadowRoot.activeElement : null;
            return el && el.closest('.dialog') ? (el.getAttribute('aria-label') || el.textContent.trim()
                || el.getAttribute('name') || el.localName) : null;
        }"""
        visited: list[str | None] = []
        for _ in range(15):
            page.keyboard.press("Tab")
            visited.append(page.evaluate(where))
        assert None not in visited, visited
        wraps = [i for i, name in enumerate(visited) if name == "Close" and i > 0]
        assert len(wraps) >= 2 and all(visited[i - 1] == "Send" for i in wraps), visited  # last -> first
        for _ in range(12):
            if page.evaluate(where) == "Close":
                break
            page.keyboard.press("Tab")
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(where) == "Send"  # first -> last
        page.keyboard.press("Escape")
        expect(page.get_by_role("dialog", name="Send feedback")).to_be_hidden()
        expect(launcher).to_be_focused()
    finally:
        context.close()


def test_module_build_own_button_and_placement(sdk_stack: Stack, relay: httpx.Client, owner: Admin,
                                               host: HostSite, browser: Browser) -> None:
    router = sdk_stack.dev.topology["router"]["url"]
    project, key = _project(owner, "us-west")
    host.pages["/module"] = f"""<!doctype html><html><body><h1>Module shop</h1><img src="/logo.png" alt="">
<div style="width:20px;height:20px;background:url(/pattern.png)"></div>
<script type="module">
import Relay from "{router}/sdk/v1/relay.mjs";
window.Relay = Relay;
await Relay.init({{key: "{key['key']}", widget: false}});
window.relayReady = true;
</script></body></html>"""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(host.origin + "/module")
        page.wait_for_function("window.relayReady === true")
        expect(page.get_by_role("button", name="Feedback")).to_have_count(0)  # widget: false, no launcher
        page.evaluate("Relay.openWidget()")  # the page's own button would call this
        expect(page.get_by_role("dialog", name="Send feedback")).to_be_visible()
        page.keyboard.press("Escape")
        sent = page.evaluate("Relay.report({type: 'feedback', text: 'from the module', screenshot: true})")
        shots = until(lambda: relay.get(f"/v1/projects/{project['id']}/interactions/{sent}/media",
                                        headers=owner.h).json().get("data"), 20, "the module's screenshot")
        assert [m["kind"] for m in shots] == ["screenshot"]
        stored = relay.get(f"/v1/projects/{project['id']}/interactions/{sent}", headers=owner.h).json()
        assert stored["source"] == "sdk" and stored["content"]["text"] == "from the module"
        # The screenshot library fetched the page's images to draw them: the SDK's own requests, not the page's.
        assert not [e for e in stored["logs"]["network"] if e["url"].endswith(".png")], stored["logs"]["network"]

        host.pages["/left"] = shop_page(router, key["key"], options=', widget: {placement: "bottom-left"}')
        page.goto(host.origin + "/left")
        page.wait_for_function("window.relayReady === true")
        box = page.get_by_role("button", name="Feedback").bounding_box()
        assert box is not None and box["x"] < 100 and box["y"] > 700
    finally:
        context.close()


def test_light_and_dark_themes(sdk_stack: Stack, owner: Admin, host: HostSite, browser: Browser) -> None:
    """`theme` picks the widget's colours and the colour scheme of its native controls (radios, the file
    button); `auto` follows the browser's preference, `light` and `dark` do not."""
    router = sdk_stack.dev.topology["router"]["url"]
    _, key = _project(owner, "us-west")
    for theme in ("light", "dark", "auto"):
        host.pages[f"/theme-{theme}"] = shop_page(router, key["key"], options=f', widget: {{theme: "{theme}"}}')
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for preference in ("light", "dark"):
        context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme=preference)
        try:
            page = context.new_page()
            for theme in ("light", "dark", "auto"):
                page.goto(f"{host.origin}/theme-{theme}")
                page.wait_for_function("window.relayReady === true")
                page.get_by_role("button", name="Feedback").click()
                dialog = page.get_by_role("dialog", name="Send feedback")
                expect(dialog).to_be_visible()
                seen[(theme, preference)] = dialog.evaluate("""el => {
                    const style = (node) => getComputedStyle(node);
                    const file = el.querySelector("input[type=file]");
                    return {background: style(el).backgroundColor, text: style(el).color,
                            scheme: style(el).colorScheme, file: style(file).colorScheme};
                }""")
                if theme != "auto" and theme == preference:
                    page.screenshot(path=str(SHOTS / f"widget-{theme}.png"))
        finally:
            context.close()
    light = {"background": "rgb(255, 255, 255)", "text": "rgb(17, 24, 39)", "scheme": "light", "file": "light"}
    dark = {"background": "rgb(17, 24, 39)", "text": "rgb(249, 250, 251)", "scheme": "dark", "file": "dark"}
    assert seen == {("light", "light"): light, ("light", "dark"): light, ("dark", "light"): dark,
                    ("dark", "dark"): dark, ("auto", "light"): light, ("auto", "dark"): dark}, seen


def _png() -> bytes:
    """A 2x2 PNG the user attaches (what a phone's screenshot would be)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_attached_image_and_nothing_loaded_unasked(sdk_stack: Stack, relay: httpx.Client, owner: Admin,
                                                   host: HostSite, page: Page) -> None:
    """The file upload beside the screenshot: an attached image is stored as the report's screenshot, as the
    user gave it, and no DOM screenshot is drawn. An idea is sent as `feedback`. The chunks load only when
    asked: no replay without `replay.sampleRate`, no screenshot library when an image was attached."""
    router = sdk_stack.dev.topology["router"]["url"]
    project, key = _project(owner, "us-west")
    host.pages["/attach"] = shop_page(router, key["key"])
    loaded: list[str] = []
    page.on("request", lambda request: loaded.append(request.url.split("?")[0].rsplit("/", 1)[-1])
            if "/sdk/v1/" in request.url else None)
    page.goto(host.origin + "/attach")
    page.wait_for_function("window.relayReady === true")
    page.get_by_role("button", name="Feedback").click()
    page.get_by_label("Idea").check()
    page.get_by_label("What happened?").fill("Here is what I see on my phone")
    image = _png()
    page.get_by_label("Or attach an image").set_input_files(
        files=[FilePayload(name="phone.png", mimeType="image/png", buffer=image)])
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_text("Thanks", exact=True)).to_be_visible(timeout=20_000)

    stored = until(lambda: _interactions(relay, owner, project), 20, "the report")
    assert [(i["type"], i["source"]) for i in stored] == [("feedback", "widget")]
    shots = until(lambda: relay.get(f"/v1/projects/{project['id']}/interactions/{stored[0]['id']}/media",
                                    headers=owner.h).json()["data"], 20, "the attached image")
    assert [(m["kind"], m["content_type"], m["size_bytes"]) for m in shots] == [("screenshot", "image/png",
                                                                                  len(image))]
    content = relay.get(f"/v1/projects/{project['id']}/media/{shots[0]['id']}/content", headers=owner.h)
    assert content.content == image
    assert loaded == ["relay.js"], loaded  # neither replay.mjs nor screenshot.mjs


def test_capture_switches(sdk_stack: Stack, relay: httpx.Client, owner: Admin, host: HostSite, page: Page) -> None:
    """`capture` turns each kind of capture off on its own (all are on by default: the first test)."""
    router = sdk_stack.dev.topology["router"]["url"]
    project, key = _project(owner, "eu-west")
    host.pages["/quiet"] = shop_page(router, key["key"], options=", capture: {console: false, network: false}")
    page.goto(host.origin + "/quiet")
    page.wait_for_function("window.relayReady === true")
    sent = page.evaluate("""async () => {
        console.log("not captured");
        await fetch("/api/quiet").catch(() => {});
        setTimeout(() => { throw new Error("still captured"); });
        await new Promise((r) => setTimeout(r, 50));
        return Relay.report({type: "bug", text: "quiet page"});
    }""")
    logs = relay.get(f"/v1/projects/{project['id']}/interactions/{sent}", headers=owner.h).json()["logs"]
    assert logs["console"] == [] and logs["network"] == [], logs
    assert [e["message"] for e in logs["errors"]] == ["Error: still captured"], logs


def test_demo_shop(sdk_stack: Stack, relay: httpx.Client, owner: Admin, page: Page) -> None:
    """The page to try the SDK by hand (README): `/sdk/v1/demo?key=…` runs the widget against that key's
    project, and its failing checkout shows up in the report."""
    router = sdk_stack.dev.topology["router"]["url"]
    project, key = _project(owner, "us-west")
    page.goto(f"{router}/sdk/v1/demo?key={key['key']}")
    expect(page.get_by_text("Relay is running")).to_be_visible(timeout=20_000)
    page.get_by_role("button", name="Add to cart").first.click()
    page.get_by_role("button", name="Checkout (fails on purpose)").click()
    page.wait_for_timeout(300)
    page.get_by_role("button", name="Feedback").click()
    page.get_by_label("What happened?").fill("Checkout failed in the demo")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_text("Thanks", exact=True)).to_be_visible(timeout=20_000)
    stored = until(lambda: _interactions(relay, owner, project), 20, "the demo's report")
    detail = relay.get(f"/v1/projects/{project['id']}/interactions/{stored[0]['id']}", headers=owner.h).json()
    assert detail["content"]["text"] == "Checkout failed in the demo"
    assert any(e["url"].endswith("/demo-shop/checkout?cart=") and e["status"] == 404
               for e in detail["logs"]["network"]), detail["logs"]["network"]
    assert any("added to cart" in e["message"] for e in detail["logs"]["console"])
