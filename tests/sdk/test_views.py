"""The widget's further views and the rest of the API (API.md, "The browser SDK"; issue 12): the public
board with voting, the public roadmap, chat whose conversation token the page keeps, a survey the server
chose shown once, `Relay.identify`, and `Relay.flags()`."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import Browser, expect

from tests.conftest import Admin, Stack, until
from tests.sdk.browser import HostSite, shop_page


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
        votes = _get(relay, owner, f"{base}/feedback-items/{item['id']}/votes")["data"]
        assert len(votes) == 1 and votes[0]["user_id"]

        # The roadmap: public items only.
        page.get_by_role("button", name="Roadmap").click()
        roadmap = page.get_by_role("list", name="Roadmap")
        expect(roadmap).to_contain_text("Offline mode")
        expect(roadmap).to_contain_text("in progress")
        expect(roadmap).not_to_contain_text("Secret plan")

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
