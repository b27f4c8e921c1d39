"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the whole topology.

A person signs up, creates an EU project, finds a bug that came in through the API by searching the inbox,
opens it, sees its console log and screenshot, and changes its status; the change shows in the API and in
the audit log. A viewer sees no edit controls and a forged POST is refused; another project's page is 404;
EU pages come from the EU cell; a canary planted in an EU interaction is in no router log after browsing.
Screenshots of the main pages at 1280 and 390 px wide are saved under a temporary folder (path printed).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import struct
import subprocess
import sys
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from common.ids import uuid7
from relay.devstack import ROOT, DevStack
from tests import mailbox
from tests.conftest import Admin, sql, until

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
WIDTHS = {"desktop": 1280, "phone": 390}
PASSWORD = "correct horse battery staple"


def png(width: int, height: int) -> bytes:
    """A plain PNG (a bluish page with a red bar), as the SDK would send a screenshot."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + (b"\xd0\x20\x20" if y < height // 6 else b"\xe8\xee\xf8") * width
                    for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = png(640, 400)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="relay-dashboard-shots-"))
    print(f"dashboard screenshots in {folder}")
    return folder


@pytest.fixture()
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": WIDTHS["desktop"], "height": 900})
    yield ctx
    ctx.close()


def db(dsn: str, query: str, *args: Any) -> list[Any]:
    """`sql` from another thread: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(sql, dsn, query, *args).result()


OVERFLOW = """width => [...document.querySelectorAll('main *')].filter(el =>
    el.getBoundingClientRect().right > width + 1 && !el.closest('.scroll')).map(el => el.tagName + '.' + el.className)
    .slice(0, 5)"""
"""What sticks out of a page of `width` px, other than inside a container that scrolls sideways on its own."""


def snap(page: Page, shots: Path, name: str) -> None:
    """The page at desktop and phone widths, full length; at either, nothing may stick out sideways (a table
    too wide for a phone stacks its rows, or scrolls within its own container)."""
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (name, label)
        assert page.evaluate(OVERFLOW, width) == [], (name, label)
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})


def residency_cli(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    """`relay residency …` against the session's topology, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.run([sys.executable, "-m", "relay", "residency", *args, "--state-dir", str(stack.state_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(base + "/app/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()


def ingest_bug(router: httpx.Client, h: dict[str, str], project_id: str, title: str, text: str) -> str:
    """A bug with logs and a screenshot, sent as the SDK would with a new ingest key; its id."""
    r = router.post(f"/v1/projects/{project_id}/api-keys", json={"name": "sdk", "scopes": ["ingest"]}, headers=h)
    assert r.status_code == 201, r.text
    key = {"h": {"Authorization": f"Bearer {r.json()['key']}"}}
    r = router.post("/v1/ingest/interactions", headers=key["h"], json={
        "type": "bug", "severity": "high", "tags": ["checkout"],
        "content": {"title": title, "description": text},
        "logs": {"console": [{"level": "error", "message": "TypeError: cart.total is undefined", "ts": 1}],
                 "network": [{"method": "POST", "url": "https://shop.example/api/pay", "status": 502,
                              "duration": 812}],
                 "errors": [{"message": "Unhandled rejection", "stack": "at pay (checkout.js:42)"}]},
        "technical_context": {"url": "https://shop.example/checkout", "viewport": "1280x800"}})
    assert r.status_code == 201, r.text
    interaction_id = str(r.json()["id"])
    r = router.post(f"/v1/ingest/interactions/{interaction_id}/media?kind=screenshot", content=PNG,
                    headers={**key["h"], "Content-Type": "image/png"})
    assert r.status_code == 201, r.text
    return interaction_id


def test_sign_up_create_eu_project_triage_a_bug(browser: Browser, context: BrowserContext, router: httpx.Client,
                                               stack: DevStack, shots: Path) -> None:
    base = str(router.base_url).rstrip("/")
    page = context.new_page()
    regions: dict[str, str | None] = {}
    page.on("response", lambda r: regions.__setitem__(r.url, r.headers.get("x-relay-region")))

    response = page.goto(base + "/app/")
    assert response is not None and response.status == 200
    assert "unsafe-inline" not in (response.headers.get("content-security-policy") or "x")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    snap(page, shots, "sign-in")
    page.get_by_role("link", name="Create an account").click()
    email = f"d-{secrets.token_hex(5)}@example.com"
    page.get_by_label("Name").fill("Dana")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "relay_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["value"].startswith("rs_")

    name = f"Shop EU {secrets.token_hex(2)}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("Region").select_option("eu-west")
    page.get_by_role("button", name="New project").click()
    page.wait_for_url(re.compile(r"/app/projects/[0-9a-f-]{36}/$"))
    project_id = page.url.rstrip("/").rsplit("/", 1)[1]
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()

    # The account the browser made is the API's: its project, its region, a key to ingest with.
    token = router.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()["token"]
    h = {"Authorization": f"Bearer {token}"}
    project = router.get(f"/v1/projects/{project_id}", headers=h).json()
    assert project["region"] == "eu-west" and project["name"] == name
    canary = f"canary-{secrets.token_hex(8)}"
    interaction_id = ingest_bug(router, h, project_id, "Checkout button frozen",
                                f"I pressed pay and the spinner never stopped {canary}")
    ingest_bug(router, h, project_id, "Avatar upload fails", "The profile picture never changes")

    page.goto(base + "/app/")
    page.get_by_role("link", name=name).click()
    page.get_by_label("Search").fill("spinner")
    page.get_by_label("Search").press("Enter")
    expect(page.get_by_role("link", name="Checkout button frozen")).to_be_visible()
    expect(page.get_by_role("link", name="Avatar upload fails")).to_have_count(0)
    snap(page, shots, "inbox")

    page.get_by_role("link", name="Checkout button frozen").click()
    page.wait_for_url(f"**/interactions/{interaction_id}")
    expect(page.get_by_role("cell", name="TypeError: cart.total is undefined")).to_be_visible()
    expect(page.get_by_role("cell", name="https://shop.example/api/pay")).to_be_visible()
    shot = page.locator("img.shot")
    expect(shot).to_be_visible()
    assert shot.evaluate("img => img.complete && img.naturalWidth") == 640
    assert regions[page.url] == "eu-west"
    # No inline script anywhere, and the cell's page says so itself.
    html = page.content()
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None and re.search(r"\son[a-z]+=", html) is None
    policy = page.request.get(page.url).headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy

    page.get_by_label("Status").select_option("resolved")  # htmx saves on change
    expect(page.get_by_role("status")).to_contain_text("Saved: resolved")
    got = router.get(f"/v1/projects/{project_id}/interactions/{interaction_id}", headers=h).json()
    assert got["status"] == "resolved"
    trail = router.get(f"/v1/projects/{project_id}/audit-logs", params={"target_id": interaction_id},
                       headers=h).json()["data"]
    assert [(e["action"], e["actor_type"], e["actor_id"], e["meta"]["fields"]) for e in trail] == [
        ("interaction.updated", "admin", router.get("/v1/auth/me", headers=h).json()["id"], ["status"])]
    page.reload()
    expect(page.get_by_label("Status")).to_have_value("resolved")
    expect(page.locator(".trail")).to_contain_text("interaction.updated")
    snap(page, shots, "interaction")

    # Without JavaScript the same form posts and the page comes back with the change.
    plain = browser.new_context(java_script_enabled=False, storage_state=context.storage_state())
    still = plain.new_page()
    still.goto(page.url)
    still.get_by_label("Status").select_option("closed")
    still.get_by_role("button", name="Save").click()
    expect(still.get_by_label("Status")).to_have_value("closed")
    plain.close()
    # The inbox filter by status, and the counts per status.
    page.goto(f"{base}/app/projects/{project_id}/?status=closed")
    expect(page.get_by_role("link", name="Checkout button frozen")).to_be_visible()
    expect(page.get_by_role("link", name="Avatar upload fails")).to_have_count(0)
    page.goto(base + "/app/")
    snap(page, shots, "projects")

    # Every page of this EU project came from the EU cell; the canary is in no router log.
    pages = [u for u in regions if f"/app/projects/{project_id}" in u]
    assert pages and all(regions[u] == "eu-west" for u in pages), {u: regions[u] for u in pages}
    assert stack.log_dir is not None
    for log in [*stack.log_dir.glob("router*.log"), *(stack.trace_dir.glob("router*") if stack.trace_dir else [])]:
        assert canary not in log.read_text(errors="replace"), log
    control = stack.topology["router"]["database_url"]
    tables = [r["name"] for r in db(control, "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'")]
    assert "project_directory" in tables
    for table in tables:  # every row of the control database, as text
        found = db(control, f'SELECT count(*) AS n FROM "{table}" t WHERE strpos(t::text, $1) > 0', canary)
        assert found[0]["n"] == 0, table
    eu = stack.topology["cells"]["eu-west"]["database_url"]
    assert db(eu, "SELECT count(*) AS n FROM interactions WHERE strpos(content_text, $1) > 0", canary)[0]["n"] == 1


def test_a_viewer_sees_no_edit_controls_and_a_forged_post_is_refused(
        context: BrowserContext, router: httpx.Client, admin: Admin) -> None:
    base = str(router.base_url).rstrip("/")
    project = admin.project("eu-west")
    interaction_id = ingest_bug(router, admin.h, project["id"], "Viewer can look", "only look, never touch")
    viewer = admin.member(project, "viewer")
    page = context.new_page()
    sign_in(page, base, viewer.email)
    page.goto(f"{base}/app/projects/{project['id']}/")
    expect(page.get_by_role("link", name="Viewer can look")).to_be_visible()
    expect(page.get_by_role("checkbox")).to_have_count(0)
    page.get_by_role("link", name="Viewer can look").click()
    expect(page.get_by_role("heading", name="Triage")).to_be_visible()
    expect(page.get_by_role("combobox")).to_have_count(0)
    expect(page.locator("form[method=post]").filter(has_not=page.locator("input[name=csrf]"))).to_have_count(0)
    expect(page.get_by_role("button", name="Save")).to_have_count(0)

    target = f"{base}/app/projects/{project['id']}/interactions/{interaction_id}"
    csrf = page.locator("form.signout input[name=csrf]").get_attribute("value")
    assert csrf
    # With the right CSRF token the viewer's role still forbids it (the cell says so)...
    forged = page.request.post(target, form={"csrf": csrf, "status": "closed"}, max_redirects=0)
    assert forged.status == 403 and "role" in forged.json()["detail"]
    # ...and without it, nobody gets past the router.
    no_token = page.request.post(target, form={"status": "closed"}, max_redirects=0)
    assert no_token.status == 403 and "form" in no_token.json()["detail"]
    bulk = page.request.post(f"{base}/app/projects/{project['id']}/interactions/status",
                             form={"csrf": csrf, "status": "closed", "ids": interaction_id}, max_redirects=0)
    assert bulk.status == 403
    got = router.get(f"/v1/projects/{project['id']}/interactions/{interaction_id}", headers=admin.h).json()
    assert got["status"] == "new"


def test_an_agent_changes_many_at_once_and_csrf_guards_the_owner_too(
        context: BrowserContext, router: httpx.Client, admin: Admin) -> None:
    base = str(router.base_url).rstrip("/")
    project = admin.project("us-west")
    ids = [ingest_bug(router, admin.h, project["id"], f"Bulk item {n}", "many at once") for n in range(3)]
    agent = admin.member(project, "agent")
    page = context.new_page()
    sign_in(page, base, agent.email)
    response = page.goto(f"{base}/app/projects/{project['id']}/")
    assert response is not None and response.headers["x-relay-region"] == "us-west"
    for n in (0, 1):
        page.get_by_role("checkbox", name=f"Select Bulk item {n}").check()
    page.get_by_label("Change selected to").select_option("triaging")
    page.get_by_role("button", name="Update selected").click()
    expect(page.locator(".counts")).to_contain_text("triaging 2")
    statuses = {i: router.get(f"/v1/projects/{project['id']}/interactions/{i}", headers=admin.h).json()["status"]
                for i in ids}
    assert statuses == {ids[0]: "triaging", ids[1]: "triaging", ids[2]: "new"}
    # A cross-site form aimed at the same endpoint carries the cookie but not the token.
    forged = page.request.post(f"{base}/app/projects/{project['id']}/interactions/status",
                               form={"status": "closed", "ids": ids[2]}, max_redirects=0)
    assert forged.status == 403
    # A change made elsewhere (the API, another process) shows in the counts at the next page, not seconds later.
    r = router.patch(f"/v1/projects/{project['id']}/interactions/{ids[2]}", json={"status": "closed"},
                     headers=admin.h)
    assert r.status_code == 200, r.text
    page.reload()
    expect(page.locator(".counts")).to_contain_text("closed 1")
    expect(page.locator(".counts")).to_contain_text("new 0")


def test_another_projects_page_is_404(context: BrowserContext, router: httpx.Client, admin: Admin) -> None:
    base = str(router.base_url).rstrip("/")
    theirs = admin.project("eu-west")
    interaction_id = ingest_bug(router, admin.h, theirs["id"], "Not yours", "private")
    stranger = Admin(router)
    mine = stranger.project("eu-west")
    page = context.new_page()
    sign_in(page, base, stranger.email)
    for path in (f"/app/projects/{theirs['id']}/", f"/app/projects/{theirs['id']}/interactions/{interaction_id}",
                 f"/app/projects/{mine['id']}/interactions/{interaction_id}"):
        response = page.goto(base + path)
        assert response is not None and response.status == 404, path
        assert "Not yours" not in page.content()
        expect(page.get_by_role("link", name="Back to your projects")).to_be_visible()  # a page, for a person
    # Signed out, a project page sends the browser to sign in, and back to the page afterwards.
    signed_out = httpx.get(f"{base}/app/projects/{mine['id']}/", follow_redirects=False)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == f"/app/?next=/app/projects/{mine['id']}/"
    fresh = context.browser.new_context() if context.browser else None
    assert fresh is not None
    again = fresh.new_page()
    again.goto(base + signed_out.headers["location"])
    again.get_by_label("Email").fill(stranger.email)
    again.get_by_label("Password").fill(PASSWORD)
    again.get_by_role("button", name="Sign in").click()
    again.wait_for_url(f"**/app/projects/{mine['id']}/")
    expect(again.get_by_role("heading", name="Inbox")).to_be_visible()
    fresh.close()


def test_residency_settings_and_members(context: BrowserContext, router: httpx.Client, admin: Admin,
                                        shots: Path) -> None:
    base = str(router.base_url).rstrip("/")
    project = admin.project("eu-west")
    pid = project["id"]
    ingest_bug(router, admin.h, pid, "Residency sample", "stored in the EU")
    page = context.new_page()
    sign_in(page, base, admin.email)

    # Residency: where it lives, a signed audit run from the page, the chain verified, the log as CSV.
    response = page.goto(f"{base}/app/projects/{pid}/residency")
    assert response is not None and response.headers["x-relay-region"] == "eu-west"
    expect(page.get_by_text("stored and processed in eu-west")).to_be_visible()
    page.get_by_role("button", name="Run audit now").click()
    expect(page.get_by_role("status")).to_contain_text("Chain verified")
    where = router.get(f"/v1/projects/{pid}/residency", headers=admin.h).json()
    receipt = where["last_audit"]
    assert receipt["scope"] == "project"
    expect(page.get_by_role("cell", name=receipt["hash"])).to_be_visible()
    expect(page.locator("table.log").last).to_contain_text("residency.audited")
    snap(page, shots, "residency")
    exported = page.request.get(f"{base}/app/projects/{pid}/residency/audit-log.csv?action=residency.audited")
    assert exported.ok and exported.headers["content-type"].startswith("text/csv")
    lines = exported.text().strip().splitlines()
    assert lines[0].startswith("created_at,action") and len(lines) == 2 and ",residency.audited," in lines[1]

    # Settings: a key made on the page is shown once and works; revoked on the page, it stops working.
    page.goto(f"{base}/app/projects/{pid}/settings")
    page.get_by_label("Key name").fill("from the dashboard")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("rk_eu_")
    sent = router.post("/v1/ingest/interactions", headers={"Authorization": f"Bearer {key}"},
                       json={"type": "feedback", "content": {"text": "with the new key"}})
    assert sent.status_code == 201, sent.text
    page.get_by_role("link", name="Back to settings").click()
    row = page.get_by_role("row").filter(has_text="from the dashboard")
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("row").filter(has_text="from the dashboard")).to_contain_text("revoked")
    refused = router.post("/v1/ingest/interactions", headers={"Authorization": f"Bearer {key}"},
                          json={"type": "feedback", "content": {"text": "after revocation"}})
    assert refused.status_code == 401

    # Privacy rules: the live preview shows what the scrubber would store; the rule is then added.
    page.get_by_label("Rule name").fill("emails")
    page.get_by_label("Pattern").fill("email")
    expect(page.locator("#preview pre")).to_contain_text("[redacted:emails]")
    expect(page.locator("#preview pre")).not_to_contain_text("jane.doe@example.com")
    page.get_by_role("button", name="Add rule").click()
    rules = router.get(f"/v1/projects/{pid}/privacy-rules", headers=admin.h).json()["data"]
    assert ("emails", "email") in [(r["name"], r["rule"]["pattern"]) for r in rules]
    expect(page.get_by_role("row").filter(has_text="emails")).to_be_visible()

    # Webhooks: the signing secret is shown once.
    page.get_by_label("Destination URL").fill("http://127.0.0.1:9/relay-hook")
    page.get_by_role("button", name="Add webhook").click()
    expect(page.get_by_role("status")).to_contain_text("whsec_")
    hooks = router.get(f"/v1/projects/{pid}/webhooks", headers=admin.h).json()["data"]
    assert [h["url"] for h in hooks] == ["http://127.0.0.1:9/relay-hook"]
    snap(page, shots, "settings")

    # Members (the router's page): a colleague is invited as agent, follows the emailed link, signs in and
    # accepts; then they are a member.
    colleague = Admin(router)
    page.goto(f"{base}/app/projects/{pid}/members")
    page.get_by_label("Email").fill(colleague.email)
    page.get_by_label("Role").select_option("agent")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_role("row").filter(has_text=colleague.email)).to_contain_text("agent (invited)")
    mail = mailbox.wait_for(mailbox.directory_of(router), colleague.email)[-1]
    link = re.search(r"https?://\S+/app/invitations/\S+", mail.get_content())
    assert link, mail.get_content()
    theirs = context.browser.new_context() if context.browser else None
    assert theirs is not None
    try:
        invited = theirs.new_page()
        invited.goto(base + link.group(0)[link.group(0).index("/app/"):])
        invited.get_by_label("Email").fill(colleague.email)
        invited.get_by_label("Password").fill(colleague.password)
        invited.get_by_role("button", name="Sign in").click()
        invited.get_by_role("button", name="Accept invitation").click()
        expect(invited).to_have_url(re.compile(f"/app/projects/{pid}/$"))
    finally:
        theirs.close()
    listed = router.get(f"/v1/projects/{pid}/members", headers=admin.h).json()["data"]
    assert {m["email"]: m["role"] for m in listed}[colleague.email] == "agent"
    page.reload()
    expect(page.get_by_role("table", name="Open invitations")).to_have_count(0)


def test_board_roadmap_surveys_conversations_and_replays(context: BrowserContext, router: httpx.Client,
                                                         admin: Admin, shots: Path) -> None:
    base = str(router.base_url).rstrip("/")
    project = admin.project("us-west")
    pid = project["id"]
    ingest = admin.key(project, ["ingest"])["h"]
    api = f"/v1/projects/{pid}"
    assert router.post(f"{api}/feedback-items", headers=admin.h,
                       json={"title": "Dark mode", "description": "Please"}).status_code == 201
    assert router.post(f"{api}/roadmap-items", headers=admin.h,
                       json={"title": "Offline sync", "status": "in_progress"}).status_code == 201
    survey = router.post(f"{api}/surveys", headers=admin.h, json={"name": "NPS", "definition": {
        "type": "popover", "title": "How are we doing?", "thankYouMessage": "Thanks",
        "questions": [{"id": "score", "type": "rating", "text": "How likely are you to recommend us?"},
                      {"id": "plan", "type": "choice", "text": "Which plan?", "options": ["free", "pro"]}]}})
    assert survey.status_code == 201, survey.text
    session = router.post("/v1/ingest/sessions", headers=ingest, json={}).json()["id"]
    for score, plan in ((4, "pro"), (5, "pro"), (3, "free")):
        r = router.post(f"/v1/ingest/surveys/{survey.json()['id']}/responses", headers=ingest,
                        json={"session_id": session, "responses": {"score": score, "plan": plan}})
        assert r.status_code == 201, r.text
    chat = router.post("/v1/ingest/conversations", headers=ingest,
                       json={"session_id": session, "subject": "Billing question", "body": "Why two invoices?"})
    assert chat.status_code == 201, chat.text

    page = context.new_page()
    sign_in(page, base, admin.email)
    page.goto(f"{base}/app/projects/{pid}/board")
    expect(page.get_by_role("row").filter(has_text="Dark mode")).to_contain_text("under review")
    page.goto(f"{base}/app/projects/{pid}/roadmap")
    expect(page.get_by_role("region", name="in progress")).to_contain_text("Offline sync")
    page.goto(f"{base}/app/projects/{pid}/surveys")
    expect(page.get_by_text("Average: 4.0")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="pro")).to_contain_text("2")
    snap(page, shots, "surveys")
    page.goto(f"{base}/app/projects/{pid}/conversations")
    page.get_by_role("link", name="Billing question").click()
    expect(page.get_by_text("Why two invoices?")).to_be_visible()
    page.get_by_label("Reply").fill("One was a duplicate; it is refunded.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_text("One was a duplicate; it is refunded.")).to_be_visible()
    messages = router.get(f"{api}/conversations/{chat.json()['id']}/messages", headers=admin.h).json()["data"]
    assert [(m["direction"], m["body"]) for m in messages] == [
        ("inbound", "Why two invoices?"), ("outbound", "One was a duplicate; it is refunded.")]
    snap(page, shots, "conversation")
    page.goto(f"{base}/app/projects/{pid}/replays")
    expect(page.get_by_text("No replays recorded.")).to_be_visible()


def test_an_agent_merges_a_suggested_duplicate_and_unmerges_it(
        browser: Browser, context: BrowserContext, router: httpx.Client, admin: Admin, shots: Path) -> None:
    base = str(router.base_url).rstrip("/")
    project = admin.project("eu-west")
    key = admin.key(project, ["ingest"])
    # Two unrelated reports: the workers never group them on their own, so the pair stays a suggestion
    # (`similar` suggests every other interaction, best first) until a person merges it.
    ids = []
    for content in ({"title": "App crashes when I upload a profile photo"},
                    {"title": "Invoice PDF shows last month's total"}):
        r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": content})
        assert r.status_code == 201, r.text
        ids.append(str(r.json()["id"]))
    crash, invoice = ids

    def suggested() -> bool:
        r = router.get(f"/v1/projects/{project['id']}/interactions/{crash}/similar", headers=admin.h)
        return [s["interaction"]["id"] for s in r.json()["data"]] == [invoice]

    until(suggested, 120, "the suggestion")
    url = f"{base}/app/projects/{project['id']}/interactions/{crash}"

    viewer = admin.member(project, "viewer")
    looking = browser.new_context()
    try:
        seen = looking.new_page()
        sign_in(seen, base, viewer.email)
        seen.goto(url)
        expect(seen.locator("ul.dupes")).to_contain_text("Invoice PDF shows last month's total")
        expect(seen.get_by_role("button", name=re.compile("^(Merge|Unmerge|Not a duplicate)"))).to_have_count(0)
        csrf = seen.locator("form.signout input[name=csrf]").get_attribute("value")
        assert csrf
        forged = seen.request.post(f"{url}/merge", form={"csrf": csrf, "interaction_id": invoice}, max_redirects=0)
        assert forged.status == 403 and "role" in forged.json()["detail"]
        no_token = seen.request.post(f"{url}/unmerge", form={"interaction_id": invoice}, max_redirects=0)
        assert no_token.status == 403
    finally:
        looking.close()

    agent = admin.member(project, "agent")
    page = context.new_page()
    sign_in(page, base, agent.email)
    page.goto(url)
    expect(page.get_by_text("Not in a duplicate group.")).to_be_visible()
    merge = page.get_by_role("button", name="Merge Invoice PDF shows last month's total")
    expect(merge.locator("xpath=..").locator("input[name=csrf]")).to_have_count(1)
    snap(page, shots, "interaction-suggestions")
    merge.click()
    unmerge = page.get_by_role("button", name="Unmerge Invoice PDF shows last month's total")
    expect(unmerge).to_be_visible()
    expect(page.get_by_text("confirmed")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Merge"))).to_have_count(0)
    got = {i: router.get(f"/v1/projects/{project['id']}/interactions/{i}", headers=admin.h).json() for i in ids}
    assert got[crash]["ai_duplicate_group_id"] == got[invoice]["ai_duplicate_group_id"]
    assert got[crash]["duplicate_confirmed"] and got[invoice]["duplicate_confirmed"]
    snap(page, shots, "interaction-duplicates")

    unmerge.click()
    expect(page.get_by_text("Not in a duplicate group.")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Unmerge"))).to_have_count(0)
    left = router.get(f"/v1/projects/{project['id']}/interactions/{invoice}", headers=admin.h).json()
    assert left["ai_duplicate_group_id"] == invoice and left["duplicate_confirmed"] is False
    trail = router.get(f"/v1/projects/{project['id']}/audit-logs", headers=admin.h,
                       params={"target_id": crash}).json()["data"]
    assert "interaction.duplicate_merged" in {e["action"] for e in trail}


def test_an_agent_says_a_suggestion_is_not_a_duplicate_with_and_without_javascript(
        browser: Browser, context: BrowserContext, router: httpx.Client, admin: Admin, shots: Path) -> None:
    base = str(router.base_url).rstrip("/")
    project = admin.project("eu-west")
    api = f"/v1/projects/{project['id']}"
    key = admin.key(project, ["ingest"])
    ids = []
    for content in ({"title": "App crashes when I upload a profile photo"},
                    {"title": "Invoice PDF shows last month's total"},
                    {"title": "Add a dark theme for the dashboard"}):
        r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": content})
        assert r.status_code == 201, r.text
        ids.append(str(r.json()["id"]))
    crash, invoice, dark = ids

    def suggested() -> list[str]:
        return [s["interaction"]["id"] for s in router.get(f"{api}/interactions/{crash}/similar",
                                                           headers=admin.h).json()["data"]]

    until(lambda: set(suggested()) == {invoice, dark}, 120, "the suggestions")
    url = f"{base}/app/projects/{project['id']}/interactions/{crash}"

    viewer = admin.member(project, "viewer")
    looking = browser.new_context()
    try:
        seen = looking.new_page()
        sign_in(seen, base, viewer.email)
        seen.goto(url)
        expect(seen.locator("ul.dupes")).to_contain_text("Invoice PDF shows last month's total")
        expect(seen.get_by_role("button", name=re.compile("^Not a duplicate"))).to_have_count(0)
        csrf = seen.locator("form.signout input[name=csrf]").get_attribute("value")
        forged = seen.request.post(f"{url}/dismiss", form={"csrf": csrf or "", "interaction_id": invoice},
                                   max_redirects=0)
        assert forged.status == 403 and "role" in forged.json()["detail"]
    finally:
        looking.close()
    agent = admin.member(project, "agent")

    # With JavaScript, htmx posts the form (CSRF token included) and takes the suggestion out in place.
    page = context.new_page()
    sign_in(page, base, agent.email)
    page.goto(url)
    wrong = page.get_by_role("button", name="Not a duplicate: Invoice PDF shows last month's total")
    expect(wrong.locator("xpath=..").locator("input[name=csrf]")).to_have_count(1)
    page.evaluate("window.stayed = true")
    wrong.click()
    expect(page.locator("ul.dupes li", has_text="Invoice PDF shows last month's total")).to_have_count(0)
    expect(page.locator("ul.dupes li", has_text="Add a dark theme for the dashboard")).to_have_count(1)
    assert page.evaluate("window.stayed === true")  # swapped in place, not a new page
    assert suggested() == [dark]
    page.reload()
    expect(page.get_by_text("Invoice PDF shows last month's total")).to_have_count(0)

    # Without JavaScript the form posts and the page comes back without the suggestion.
    plain = browser.new_context(java_script_enabled=False)
    try:
        bare = plain.new_page()
        sign_in(bare, base, agent.email)
        bare.goto(url)
        bare.get_by_role("button", name="Not a duplicate: Add a dark theme for the dashboard").click()
        expect(bare.get_by_role("heading", name="Duplicates")).to_be_visible()
        expect(bare.get_by_text("Add a dark theme for the dashboard")).to_have_count(0)
        assert bare.url == url
    finally:
        plain.close()
    assert suggested() == []
    trail = router.get(f"{api}/audit-logs", headers=admin.h, params={"target_id": crash}).json()["data"]
    dismissed = [e for e in trail if e["action"] == "interaction.suggestion_dismissed"]
    assert sorted(e["meta"]["other_id"] for e in dismissed) == sorted([invoice, dark])
    assert {e["actor_id"] for e in dismissed} == {agent.user["id"]}


def test_the_replay_plays_in_the_interaction_page(context: BrowserContext, router: httpx.Client, admin: Admin,
                                                  shots: Path) -> None:
    base = str(router.base_url).rstrip("/")
    project = admin.project("us-west")
    interaction_id = ingest_bug(router, admin.h, project["id"], "Replay me", "watch what I did")
    key = admin.key(project, ["ingest"])
    replay_id, session_id, t0 = uuid7(), uuid7(), 1_760_000_000_000
    page_node = {"type": 0, "id": 1, "childNodes": [{"type": 2, "tagName": "html", "attributes": {}, "id": 2,
                 "childNodes": [{"type": 2, "tagName": "head", "attributes": {}, "id": 3, "childNodes": []},
                                {"type": 2, "tagName": "body", "attributes": {}, "id": 4, "childNodes": [
                                    {"type": 2, "tagName": "h1", "attributes": {}, "id": 5, "childNodes": [
                                        {"type": 3, "textContent": "Recorded checkout", "id": 6}]}]}]}]}
    events = [{"type": 4, "timestamp": t0, "data": {"href": "https://shop.example/checkout", "width": 800,
                                                    "height": 500}},
              {"type": 2, "timestamp": t0 + 10, "data": {"node": page_node, "initialOffset": {"left": 0, "top": 0}}},
              {"type": 3, "timestamp": t0 + 900, "data": {"source": 1, "positions": [
                  {"x": 10, "y": 10, "id": 5, "timeOffset": 0}]}}]
    r = router.post(f"/v1/ingest/replays/{replay_id}/chunks/0", params={"session_id": str(session_id)},
                    content=msgspec.json.encode(events), headers={**key["h"], "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    r = router.post(f"/v1/ingest/replays/{replay_id}/finish", params={"interaction_id": interaction_id},
                    headers=key["h"])
    assert r.status_code in (200, 202), r.text

    page = context.new_page()
    sign_in(page, base, admin.email)
    response = page.goto(f"{base}/app/projects/{project['id']}/interactions/{interaction_id}")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    player = page.locator("div.replay .relay-player")
    expect(player).to_be_visible()
    frame = player.locator("iframe")
    expect(frame).to_have_count(1)
    expect(page.frame_locator("div.replay iframe").get_by_text("Recorded checkout")).to_be_attached()
    snap(page, shots, "interaction-replay")


def test_settings_make_an_identity_secret_and_limit_origins(context: BrowserContext, router: httpx.Client,
                                                            admin: Admin, shots: Path) -> None:
    base = str(router.base_url).rstrip("/")
    project = admin.project("eu-west")
    pid = project["id"]
    key = admin.key(project, ["ingest"])
    page = context.new_page()
    sign_in(page, base, admin.email)
    page.goto(f"{base}/app/projects/{pid}/settings")
    expect(page.get_by_text("Pages on every origin may send feedback.")).to_be_visible()

    # The secret is shown once, and it is the one ingest checks a user_hash against.
    page.get_by_role("button", name="Create identity secret").click()
    secret = page.get_by_role("status").locator("code.wrap").inner_text().strip()
    assert secret.startswith("ris_")
    external_id = f"u-{secrets.token_hex(4)}"
    user_hash = hmac.new(secret.encode(), external_id.encode(), hashlib.sha256).hexdigest()
    r = router.post("/v1/ingest/interactions", headers=key["h"], json={
        "type": "bug", "content": {"text": "signed"},
        "user": {"external_id": external_id, "email": "v@example.com", "user_hash": user_hash}})
    assert r.status_code == 201, r.text
    users = router.get(f"/v1/projects/{pid}/end-users", headers=admin.h, params={"q": external_id}).json()["data"]
    assert [u["verified"] for u in users if u["external_id"] == external_id] == [True]
    page.goto(f"{base}/app/projects/{pid}/settings")
    expect(page.get_by_text(secret)).to_have_count(0)

    # Origins, one a line: saved through the settings PATCH, and ingest from another origin is refused.
    page.get_by_label("Allowed origins").fill("https://app.example.com\nhttps://shop.example.com:8443/\n")
    page.get_by_role("button", name="Save origins").click()
    expect(page.locator("ul.origins")).to_contain_text("https://shop.example.com:8443")
    stored = router.get(f"/v1/projects/{pid}/settings", headers=admin.h).json()
    assert stored["allowed_origins"] == ["https://app.example.com", "https://shop.example.com:8443"]
    page.get_by_label("Allowed origins").fill("not an origin")
    page.get_by_role("button", name="Save origins").click()
    expect(page.get_by_role("alert")).to_contain_text("origin")
    assert router.get(f"/v1/projects/{pid}/settings", headers=admin.h).json()["allowed_origins"] == stored[
        "allowed_origins"]
    page.goto(f"{base}/app/projects/{pid}/settings#sdk")
    snap(page, shots, "settings-sdk")


def test_the_residency_page_lists_the_projects_moves(context: BrowserContext, router: httpx.Client, admin: Admin,
                                                    stack: DevStack, shots: Path, tmp_path: Path) -> None:
    base = str(router.base_url).rstrip("/")
    project = admin.project("us-west")
    pid = project["id"]
    ingest_bug(router, admin.h, pid, "Moving house", "from the US to the EU")
    page = context.new_page()
    sign_in(page, base, admin.email)
    page.goto(f"{base}/app/projects/{pid}/residency")
    expect(page.get_by_text("This project has always lived in us-west.")).to_be_visible()
    # While a move copies the project out, the page says so from the project's state in this cell.
    us = stack.topology["cells"]["us-west"]["database_url"]
    db(us, "UPDATE projects SET state = 'copying' WHERE id = $1", uuid.UUID(pid))
    try:
        page.reload()
        expect(page.get_by_role("status")).to_contain_text("A move out of us-west is under way")
        expect(page.locator("ol.steps [aria-current=step]")).to_contain_text("Copying rows and files")
    finally:
        db(us, "UPDATE projects SET state = 'active' WHERE id = $1", uuid.UUID(pid))

    r = router.post(f"/v1/projects/{pid}/move", json={"to_region": "eu-west"}, headers=admin.h)
    assert r.status_code == 202, r.text
    move_id = r.json()["move_id"]

    def landed() -> bool:
        state = router.get(f"/v1/projects/{pid}/move", headers=admin.h).json()["state"]
        assert state != "failed"
        return bool(state == "purged")

    until(landed, 120, "the move")
    response = page.goto(f"{base}/app/projects/{pid}/residency")
    assert response is not None and response.headers["x-relay-region"] == "eu-west"
    row = page.locator("#moves tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("us-west")
    expect(row.locator("td").nth(2)).to_have_text("eu-west")
    expect(row).to_contain_text(move_id)
    expect(row).to_contain_text(admin.user["id"])
    expect(page.get_by_text("No canary scan recorded yet")).to_be_visible()

    # A canary scan of its new home is recorded there and shown on the page.
    canaries = tmp_path / "canaries.jsonl"
    planted = residency_cli(stack, "canary", "plant", "--project", pid, "--token", admin.token, "--out",
                            str(canaries))
    assert planted.returncode == 0, planted.stderr
    scanned = residency_cli(stack, "canary", "scan", "--canaries", str(canaries), "--region", "eu-west",
                            "--no-router", "--no-redis")
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    page.reload()
    result = page.locator("#canaries tbody tr")
    expect(result).to_have_count(1)
    expect(result).to_contain_text("no breach")
    expect(result).to_contain_text("20 of 20 markers")
    expect(result).to_contain_text("eu-west database")
    snap(page, shots, "residency-moves")

    # The compliance officer may be a viewer: the moves and the canary results are theirs to read too (not who
    # asked for a move, nor the audit log), and the page reads at a phone's width without sideways scrolling.
    viewer = admin.member(project, "viewer")
    theirs = context.browser.new_context() if context.browser else None
    assert theirs is not None
    try:
        officer = theirs.new_page()
        sign_in(officer, base, viewer.email)
        officer.goto(f"{base}/app/projects/{pid}/residency")
        moved = officer.locator("#moves tbody tr")
        expect(moved).to_have_count(1)
        expect(moved).to_contain_text("us-west")
        expect(moved).to_contain_text(move_id)
        expect(moved).not_to_contain_text(admin.user["id"])
        expect(officer.locator("#canaries tbody tr")).to_contain_text("no breach")
        expect(officer.get_by_text("The audit log is visible to admins.")).to_be_visible()
        expect(officer.get_by_role("button", name="Run audit now")).to_have_count(0)
        snap(officer, shots, "residency-viewer")  # at a phone's width too, without sideways scrolling
    finally:
        theirs.close()


def test_a_forgotten_password_is_reset_from_the_emailed_link(context: BrowserContext, router: httpx.Client,
                                                              topo: dict[str, Any], shots: Path) -> None:
    """What a person who forgot their password does: ask on the sign-in page, follow the emailed link, choose
    a new password, and be signed in; the link works once, and signing out is audited like the API's logout."""
    base = str(router.base_url).rstrip("/")
    user = Admin(router)
    page = context.new_page()
    page.goto(base + "/app/")
    page.get_by_role("link", name="Forgot your password?").click()
    snap(page, shots, "forgot-password")
    page.get_by_label("Email").fill(user.email)
    page.get_by_role("button", name="Send reset link").click()
    expect(page.get_by_role("status")).to_contain_text("If an account has this address")
    mail = mailbox.wait_for(mailbox.directory_of(router), user.email)[-1]
    link = re.search(r"https?://\S+/app/reset-password\?token=\S+", mail.get_content())
    assert link, mail.get_content()
    path = link.group(0)[link.group(0).index("/app/"):]

    response = page.goto(base + path)
    assert response is not None and response.status == 200
    snap(page, shots, "reset-password")
    page.get_by_label("New password").fill("short")
    page.get_by_role("button", name="Set password").click()  # the browser's own minlength stops it
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    page.get_by_label("New password").fill("a fresh passphrase")
    page.get_by_role("button", name="Set password").click()
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    problem = router.post("/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert problem.status_code == 401
    assert router.get("/v1/auth/me", headers=user.h).status_code == 401  # the old session ended
    assert router.post("/v1/auth/login", json={"email": user.email, "password": "a fresh passphrase"}
                       ).status_code == 200

    # Once only: the same link again shows why it does nothing.
    page.goto(base + path)
    page.get_by_label("New password").fill("yet another passphrase")
    page.get_by_role("button", name="Set password").click()
    expect(page.get_by_text("this reset link is not valid")).to_be_visible()
    assert router.post("/v1/auth/login", json={"email": user.email, "password": "a fresh passphrase"}
                       ).status_code == 200

    page.goto(base + "/app/")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    actions = [r["action"] for r in db(topo["router"]["database_url"],
                                       "SELECT action FROM audit_logs WHERE target_id = $1 ORDER BY created_at, id",
                                       user.user["id"])]
    wanted = ("account.password_reset_requested", "account.password_reset", "auth.logout")
    assert [a for a in actions if a in wanted] == list(wanted) and actions[-1] == "auth.logout", actions
