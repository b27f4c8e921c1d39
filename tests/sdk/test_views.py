"""The widget's further views and the rest of the API (API.md, "The browser SDK"; issue 12): the public
board with voting, the public roadmap, chat whose conversation token the page keeps, a survey the server
chose shown once, `Relay.identify`, and `Relay.flags()`."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import httpx
from playwright.sync_api import Browser, Route, expect

from cell.auth import PLACEMENT_TTL
from tests.conftest import Admin, Stack, until
from tests.sdk.browser import SHOTS, HostSite, shop_page


def _get(relay: httpx.Client, owner: Admin, path: str) -> Any:
    r = relay.get(path, headers=owner.h)
    assert r.status_code == 200, r.text
    return r.json()


def test_board_chat_survey_identity_and_flags(sdk_stack: Stack, relay: httpx.Client, owner: Admin,
                                              host: HostSite, browser: Browser) -> None:
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("us-west")
    key = owner.key(project, ["ingest"])
    base = f"/v1/projects/{project['id']}"
    item = relay.post(f"{base}/feedback-items", headers=owner.h, json={"title": "Dark mode"}).json()
    assert relay.post(f"{base}/roadmap-items", headers=owner.h,
                      json={"title": "Offline mode", "status": "in_progress"}).status_code == 201
    assert relay.post(f"{base}/roadmap-items", headers=owner.h,
                      json={"title": "Secret plan", "visibility": "private"}).status_code == 201
    assert relay.post(f"{base}/feature-flags", headers=owner.h,
                      json={"flag": "new-checkout", "enabled": True}).status_code == 201
    survey = relay.post(f"{base}/surveys", headers=owner.h, json={
        "definition": {"title": "How was checkout?", "questions": [{"id": "q1", "type": "text", "text": "Tell us"}]},
        "targeting": {"showOnPages": ["/surveyed"]}}).json()
    user = ', user: {external_id: "cust-42", email: "ada@example.com", name: "Ada"}'
    host.pages["/views"] = shop_page(router, key["key"], options=user)
    host.pages["/surveyed"] = shop_page(router, key["key"], options=user)

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(host.origin + "/views")
        page.wait_for_function("window.relayReady === true")
        assert page.evaluate("Relay.flags()") == {"new-checkout": True}

        # The board: one vote per session.
        page.get_by_role("button", name="Feedback").click()
        page.get_by_role("button", name="Ideas").click()
        vote = page.get_by_role("button", name="Vote for Dark mode")
        vote.click()
        expect(vote).to_have_text("▲ 1")
        page.screenshot(path=str(SHOTS / "widget-board.png"))
        votes = _get(relay, owner, f"{base}/feedback-items/{item['id']}/votes")["data"]
        assert len(votes) == 1 and votes[0]["user_id"]

        # The roadmap: public items only.
        page.get_by_role("button", name="Roadmap").click()
        roadmap = page.get_by_role("list", name="Roadmap")
        expect(roadmap).to_contain_text("Offline mode")
        expect(roadmap).to_contain_text("in progress")
        expect(roadmap).not_to_contain_text("Secret plan")
        page.screenshot(path=str(SHOTS / "widget-roadmap.png"))

        # Chat: the conversation token stays in the page's storage, so a reload finds the conversation.
        page.get_by_role("button", name="Chat").click()
        page.get_by_label("Your message").fill("Is there a discount?")
        page.get_by_role("button", name="Send message").click()
        conversations = until(lambda: _get(relay, owner, f"{base}/conversations")["data"], 20, "the conversation")
        assert len(conversations) == 1
        stored = page.evaluate("JSON.parse(localStorage.getItem('relay.chat'))")
        assert stored["id"] == conversations[0]["id"] and stored["token"]
        page.reload()
        page.wait_for_function("window.relayReady === true")
        page.get_by_role("button", name="Feedback").click()
        page.get_by_role("button", name="Chat").click()
        expect(page.get_by_role("list", name="Messages")).to_contain_text("Is there a discount?")
        page.screenshot(path=str(SHOTS / "widget-chat.png"))

        # identify: reports carry the end user.
        page.evaluate("Relay.identify({external_id: 'cust-42', email: 'ada@example.com', name: 'Ada Lovelace'})")
        sent = page.evaluate("Relay.report({type: 'feedback', text: 'who am I'})")
        reported = _get(relay, owner, f"{base}/interactions/{sent}")
        person = _get(relay, owner, f"{base}/end-users/{reported['user_id']}")
        assert person["external_id"] == "cust-42"

        # A survey the server chose for this page: shown, answered, and not shown again.
        page.goto(host.origin + "/surveyed")
        form = page.get_by_role("dialog", name="How was checkout?")
        expect(form).to_be_visible()
        page.get_by_label("Tell us").fill("Smooth")
        page.screenshot(path=str(SHOTS / "widget-survey.png"))
        form.get_by_role("button", name="Submit").click()
        responses = until(lambda: _get(relay, owner, f"{base}/surveys/{survey['id']}/responses")["data"], 20,
                          "the survey response")
        assert len(responses) == 1 and "Smooth" in str(responses[0])
        page.reload()
        page.wait_for_function("window.relayReady === true")
        page.wait_for_timeout(1000)
        expect(page.get_by_role("dialog", name="How was checkout?")).to_have_count(0)
    finally:
        context.close()


def _hash(secret: str, external_id: str) -> str:
    return hmac.new(secret.encode(), external_id.encode(), hashlib.sha256).hexdigest()


def test_identify_with_user_hash(sdk_stack: Stack, relay: httpx.Client, owner: Admin, host: HostSite,
                                 browser: Browser) -> None:
    """API.md "Identity verification" through the SDK: the `user_hash` a page passes in `init` or `identify`
    reaches Relay with every report, so a proven user is marked verified, a wrong hash is not, and with
    `identity_verification: "required"` the SDK's report is refused until the page proves who it is."""
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("eu-west")
    key = owner.key(project, ["ingest"])
    base = f"/v1/projects/{project['id']}"
    r = relay.post(f"{base}/identity-secret", headers=owner.h)
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    proven = f'{{external_id: "cust-7", email: "ada@example.com", user_hash: "{_hash(secret, "cust-7")}"}}'
    host.pages["/verified"] = shop_page(router, key["key"], options=f", user: {proven}")

    def person(external_id: str) -> dict[str, Any]:
        found = _get(relay, owner, f"{base}/end-users?q={external_id}")["data"]
        return next(u for u in found if u["external_id"] == external_id)

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(host.origin + "/verified")
        page.wait_for_function("window.relayReady === true")
        sent = page.evaluate("Relay.report({type: 'bug', text: 'as a proven user'})")
        reported = _get(relay, owner, f"{base}/interactions/{sent}")
        ada = person("cust-7")
        assert reported["user_id"] == ada["id"] and ada["verified"] is True and ada["email"] == "ada@example.com"

        # identify() with a hash of another id: kept, but not verified.
        forged = _hash(secret, "someone-else")
        page.evaluate(f"Relay.identify({{external_id: 'cust-8', email: 'eve@example.com', user_hash: '{forged}'}})")
        sent = page.evaluate("Relay.report({type: 'bug', text: 'as a claimed user'})")
        assert _get(relay, owner, f"{base}/interactions/{sent}")["user_id"] == person("cust-8")["id"]
        assert person("cust-8")["verified"] is False

        r = relay.patch(f"{base}/settings", headers=owner.h, json={"identity_verification": "required"})
        assert r.status_code == 200, r.text
        time.sleep(PLACEMENT_TTL)
        refused = page.evaluate("Relay.report({type: 'bug', text: 'unproven'}).then(() => null, e => e.message)")
        assert refused is not None and "user_hash" in refused, refused
        page.evaluate(f"Relay.identify({{external_id: 'cust-8', user_hash: '{_hash(secret, 'cust-8')}'}})")
        sent = page.evaluate("Relay.report({type: 'bug', text: 'proven at last'})")
        assert _get(relay, owner, f"{base}/interactions/{sent}")["content"]["text"] == "proven at last"
        assert person("cust-8")["verified"] is True
    finally:
        context.close()


def test_a_survey_answer_retried_is_stored_once(sdk_stack: Stack, relay: httpx.Client, owner: Admin,
                                               host: HostSite, browser: Browser) -> None:
    """Answers go through the outbox, so they are retried; their client id makes a retry of an answer Relay
    stored (its reply lost on the way back) return that answer instead of storing a second one."""
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("eu-west")
    key = owner.key(project, ["ingest"])
    base = f"/v1/projects/{project['id']}"
    survey = relay.post(f"{base}/surveys", headers=owner.h, json={
        "definition": {"title": "One question", "questions": [{"id": "q1", "type": "text", "text": "Why?"}]},
        "targeting": {}}).json()
    host.pages["/asked"] = shop_page(router, key["key"])
    replies: list[int] = []

    def reply_lost_once(route: Route) -> None:
        stored = route.fetch()
        replies.append(stored.status)
        if len(replies) == 1:  # Relay stored it; the page hears 503
            route.fulfill(status=503, headers={"Retry-After": "1", "Access-Control-Allow-Origin": host.origin,
                                               "Access-Control-Expose-Headers": "Retry-After"}, body="")
        else:
            route.fulfill(response=stored)

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.route(f"{router}/v1/ingest/surveys/{survey['id']}/responses", reply_lost_once)
        page.goto(host.origin + "/asked")
        form = page.get_by_role("dialog", name="One question")
        expect(form).to_be_visible()
        page.get_by_label("Why?").fill("Because")
        form.get_by_role("button", name="Submit").click()

        def retried() -> bool:
            page.wait_for_timeout(200)  # route handlers run while Playwright is called
            return len(replies) >= 2

        until(retried, 20, "the answer retried", every=0)
        page.wait_for_timeout(1500)
    finally:
        context.close()
    assert replies == [201, 200], replies
    responses = _get(relay, owner, f"{base}/surveys/{survey['id']}/responses")["data"]
    assert len(responses) == 1 and "Because" in str(responses[0]), responses
    assert len([i for i in _get(relay, owner, f"{base}/interactions")["data"] if i["type"] == "survey"]) == 1


def test_a_failed_vote_or_message_says_so(sdk_stack: Stack, relay: httpx.Client, owner: Admin, host: HostSite,
                                          browser: Browser) -> None:
    """Votes and chat are sent at once, not through the outbox: when Relay fails them the panel says so, and
    the failure stays the SDK's (it is not captured as the page's own uncaught error)."""
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("us-west")
    key = owner.key(project, ["ingest"])
    base = f"/v1/projects/{project['id']}"
    assert relay.post(f"{base}/feedback-items", headers=owner.h, json={"title": "Exports"}).status_code == 201
    host.pages["/failing"] = shop_page(router, key["key"])

    def busy(route: Route) -> None:
        route.fulfill(status=503, headers={"Access-Control-Allow-Origin": host.origin}, body="")

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.route(f"{router}/v1/ingest/feedback-items/*/votes", busy)
        page.route(f"{router}/v1/ingest/conversations", busy)
        page.goto(host.origin + "/failing")
        page.wait_for_function("window.relayReady === true")
        page.get_by_role("button", name="Feedback").click()
        page.get_by_role("button", name="Ideas").click()
        page.get_by_role("button", name="Vote for Exports").click()
        expect(page.get_by_role("status")).to_have_text("Could not vote: please try again.")
        page.get_by_role("button", name="Chat").click()
        page.get_by_label("Your message").fill("Anyone there?")
        page.get_by_role("button", name="Send message").click()
        expect(page.get_by_role("status")).to_have_text("Could not send your message: please try again.")
        expect(page.get_by_label("Your message")).to_have_value("Anyone there?")  # kept to send again
        sent = page.evaluate("Relay.report({type: 'bug', text: 'after the failures'})")
    finally:
        context.close()
    assert _get(relay, owner, f"{base}/interactions/{sent}")["logs"]["errors"] == []


def test_a_delayed_survey_shows_on_a_page_left_open(sdk_stack: Stack, relay: httpx.Client, owner: Admin,
                                                    host: HostSite, browser: Browser) -> None:
    """A survey with `showAfterSeconds` is not due when the page starts; the SDK asks again when the server
    says it will be (`check_again_in`), so a page left open (a single-page app) shows it without a reload."""
    router = sdk_stack.dev.topology["router"]["url"]
    project = owner.project("us-west")
    key = owner.key(project, ["ingest"])
    r = relay.post(f"/v1/projects/{project['id']}/surveys", headers=owner.h, json={
        "definition": {"title": "Still with us?", "questions": [{"id": "q1", "type": "text", "text": "How so?"}]},
        "targeting": {"showAfterSeconds": 6}})
    assert r.status_code == 201, r.text
    host.pages["/open"] = shop_page(router, key["key"])
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        started = time.monotonic()  # the session starts after this, so the survey is due 6 s after it at least
        page.goto(host.origin + "/open")
        page.wait_for_function("window.relayReady === true")
        survey = page.get_by_role("dialog", name="Still with us?")
        expect(survey).to_be_visible(timeout=30_000)
        assert time.monotonic() - started >= 5.5  # shown once due, without a reload, not before
        page.get_by_label("How so?").focus()
        page.keyboard.press("Escape")  # as "Not now"
        expect(survey).to_have_count(0)
    finally:
        context.close()
