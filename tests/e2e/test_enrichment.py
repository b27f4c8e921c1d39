"""AI enrichment end to end: reports go in through the router as SDKs send them, the region's worker fills
`ai_summary`, `ai_labels`, `ai_duplicate_group_id` and `ai_confidence`, and the dashboard reads them back
through the router. The local provider runs on the session stack; the `openai` provider runs on a private
stack whose eu-west cell points at a small local server speaking the OpenAI chat and embeddings wire
format, while its us-west cell stays local — so the server can tell which region's text reached it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from cell.enrichment import grouping
from common.ids import uuid7
from relay.devstack import DevStack
from tests.conftest import Admin, Stack, problem, sql, until
from tests.services import StorePostgres

FIELDS = ("ai_summary", "ai_labels", "ai_duplicate_group_id", "ai_confidence")



def _enriched(router: httpx.Client, admin: Admin, project: dict[str, Any],
              ids: list[str]) -> dict[str, dict[str, Any]]:
    """Wait until every named interaction has its duplicate group; return them by id."""

    def check() -> dict[str, dict[str, Any]] | None:
        r = router.get(f"/v1/projects/{project['id']}/interactions", headers=admin.h, params={"limit": 200})
        assert r.status_code == 200, r.text
        rows = {i["id"]: i for i in r.json()["data"] if i["id"] in ids}
        done = len(rows) == len(ids) and all(i["ai_duplicate_group_id"] for i in rows.values())
        return rows if done else None

    return until(check, what=f"enrichment of {len(ids)} interactions")


def _bug(router: httpx.Client, key: dict[str, Any], title: str, description: str,
         **extra: Any) -> dict[str, Any]:
    r = router.post("/v1/ingest/interactions", headers=key["h"],
                    json={"type": "bug", "content": {"title": title, "description": description}, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _chat_interaction(router: httpx.Client, admin: Admin, project: dict[str, Any], key: dict[str, Any],
                      body: str) -> str:
    """Open a conversation as the widget does; the id of the `chat` interaction it made."""
    session = str(uuid7())
    r = router.post("/v1/ingest/conversations", headers=key["h"], json={"session_id": session, "body": body})
    assert r.status_code == 201, r.text
    chats = router.get(f"/v1/projects/{project['id']}/interactions", headers=admin.h,
                       params={"type": "chat", "session_id": session})
    [chat] = chats.json()["data"]
    return str(chat["id"])


CHECKOUT_ERROR = {"errors": [{
    "message": "TypeError: Cannot read properties of undefined (reading 'total')",
    "stack": "TypeError: Cannot read properties of undefined (reading 'total')\n"
             "    at computeTotal (https://shop.example/static/checkout.4f2a.js:118:27)\n"
             "    at applyCoupon (https://shop.example/static/checkout.4f2a.js:201:9)"}]}


def _one_problem_three_ways(router: httpx.Client, admin: Admin, project: dict[str, Any],
                            key: dict[str, Any]) -> tuple[str, str, str, str]:
    """A bug report with logs, a feedback post and a chat about one problem, and an unrelated request."""
    bug = _bug(router, key, "Checkout crashes after applying a coupon",
               "When I apply the coupon code SPRING20 at checkout the page goes white.", logs=CHECKOUT_ERROR)
    r = router.post("/v1/ingest/feedback-items", headers=key["h"], json={
        "title": "Coupon codes crash the checkout",
        "description": "Every promo code I try at checkout crashes the page."})
    assert r.status_code == 201, r.text
    feedback = router.get(f"/v1/projects/{project['id']}/interactions", headers=admin.h,
                          params={"type": "feedback"}).json()["data"][0]["id"]
    chat = _chat_interaction(router, admin, project, key,
                             "Hi, the checkout page goes blank as soon as I apply my coupon code. Can you help?")
    other = router.post("/v1/ingest/interactions", headers=key["h"], json={
        "type": "feedback", "content": {"title": "Dark mode",
                                        "description": "Please add a dark theme, the white interface hurts "
                                                       "my eyes at night."}})
    assert other.status_code == 201, other.text
    return bug["id"], feedback, chat, other.json()["id"]


# The local provider, on the session stack --------------------------------------------------------------------


def test_a_bug_a_feedback_post_and_a_chat_about_one_problem_are_suggested_and_merged(
        router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("eu-west")
    key, reader = admin.key(p, ["ingest"]), admin.key(p, ["read"])
    bug, feedback, chat, other = _one_problem_three_ways(router, admin, p, key)
    rows = _enriched(router, admin, p, [bug, feedback, chat, other])
    # Each is suggested the other two first, across types; the unrelated request comes last.
    for one in (bug, feedback, chat):
        r = router.get(f"/v1/projects/{p['id']}/interactions/{one}/similar", headers=reader["h"])
        assert r.status_code == 200, r.text
        assert [s["interaction"]["id"] for s in r.json()["data"]][2:] == [other], (one, r.json())
    assert rows[other]["ai_duplicate_group_id"] == other  # unrelated: a group of its own
    # A person confirms (the workers may have grouped them already: then this confirms their group).
    for one in (feedback, chat):
        r = router.post(f"/v1/projects/{p['id']}/interactions/{one}/duplicate-of", headers=admin.h,
                        json={"interaction_id": bug})
        assert r.status_code == 200 and r.json()["duplicate_confirmed"] is True, r.text
    rows = _enriched(router, admin, p, [bug, feedback, chat, other])

    group = rows[bug]["ai_duplicate_group_id"]
    assert rows[feedback]["ai_duplicate_group_id"] == group and rows[chat]["ai_duplicate_group_id"] == group
    assert group in (bug, feedback, chat)  # a group is named after its first member
    assert rows[other]["ai_duplicate_group_id"] == other  # unrelated: a group of its own
    # The group is visible from each member, with a reader's key too.
    listed = router.get(f"/v1/projects/{p['id']}/interactions", headers=reader["h"],
                        params={"duplicate_group": group})
    assert listed.status_code == 200, listed.text
    assert {i["id"] for i in listed.json()["data"]} == {bug, feedback, chat}
    alone = router.get(f"/v1/projects/{p['id']}/interactions", headers=reader["h"],
                       params={"duplicate_group": other}).json()["data"]
    assert [i["id"] for i in alone] == [other]

    # Summaries are the reports' own words; labels say what they are about, from words and logs.
    assert rows[bug]["ai_summary"] == ("Checkout crashes after applying a coupon — TypeError: Cannot read "
                                       "properties of undefined (reading 'total')")
    assert rows[chat]["ai_summary"] == "The checkout page goes blank as soon as I apply my coupon code."
    assert rows[feedback]["ai_summary"] == "Coupon codes crash the checkout"
    assert {"crash", "payments"} <= set(rows[bug]["ai_labels"])
    assert {"crash", "payments"} <= set(rows[chat]["ai_labels"])
    assert {"ui", "feature-request"} <= set(rows[other]["ai_labels"])
    assert "crash" not in rows[other]["ai_labels"]
    for row in rows.values():
        assert 0.0 < row["ai_confidence"] <= 1.0, row
    one = router.get(f"/v1/projects/{p['id']}/interactions/{chat}", headers=admin.h).json()
    assert {f: one[f] for f in FIELDS} == {f: rows[chat][f] for f in FIELDS}

    # The store: one signature per interaction, with the same group, scoped to the project.
    dsn = topo["cells"]["eu-west"]["database_url"]
    stored = sql(dsn, "SELECT interaction_id::text AS id, group_id FROM enrichment_signatures WHERE project_id = $1",
                 uuid.UUID(p["id"]))
    assert {r["id"]: r["group_id"] for r in stored} == {i: rows[i]["ai_duplicate_group_id"] for i in rows}


def test_duplicate_groups_stay_inside_their_project(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    key = admin.key(p, ["ingest"])
    bug = _bug(router, key, "Export to CSV times out", "The CSV export of the activity report fails with 504.")
    group = _enriched(router, admin, p, [bug["id"]])[bug["id"]]["ai_duplicate_group_id"]

    # The same words in another project of the same region: a group of that project's own.
    mine = admin.project("us-west")
    twin = _bug(router, admin.key(mine, ["ingest"]), "Export to CSV times out",
                "The CSV export of the activity report fails with 504.")
    assert _enriched(router, admin, mine, [twin["id"]])[twin["id"]]["ai_duplicate_group_id"] == twin["id"]
    assert router.get(f"/v1/projects/{mine['id']}/interactions", headers=admin.h,
                      params={"duplicate_group": group}).json()["data"] == []
    # Another account cannot list this project's group; an ingest key cannot list at all.
    stranger = Admin(router)
    problem(router.get(f"/v1/projects/{p['id']}/interactions", headers=stranger.h,
                       params={"duplicate_group": group}), 404)
    problem(router.get(f"/v1/projects/{p['id']}/interactions", headers=key["h"],
                       params={"duplicate_group": group}), 403)


def test_concurrent_reports_of_one_problem_end_in_one_group(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    texts = [f"Report {n}: the password reset email never arrives, I checked the spam folder too." for n in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda t: _bug(router, key, "Password reset email never arrives", t), texts))
    ids = [m["id"] for m in made]
    rows = _enriched(router, admin, p, ids)
    groups = {r["ai_duplicate_group_id"] for r in rows.values()}
    assert len(groups) == 1, groups
    [group] = groups
    assert group in ids
    listed = router.get(f"/v1/projects/{p['id']}/interactions", headers=admin.h,
                        params={"duplicate_group": group}).json()["data"]
    assert sorted(i["id"] for i in listed) == sorted(ids)


def test_redelivery_changes_nothing_and_a_vanished_interaction_is_no_error(
        router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    dsn = topo["cells"]["eu-west"]["database_url"]
    bug = _bug(router, key, "Calendar events shifted by one hour", "Since the clocks changed all events are late.")
    before = _enriched(router, admin, p, [bug["id"]])[bug["id"]]
    enriched_at = sql(dsn, "SELECT enriched_at FROM enrichment_signatures WHERE interaction_id = $1",
                      uuid.UUID(bug["id"]))[0][0]

    # At-least-once delivery: the same job again (only this consumer), and one for an id that is gone.
    rows = sql(dsn, """INSERT INTO outbox (project_id, kind, payload, only_job)
                       VALUES ($1, 'interaction.created', $2::jsonb, 'enrichment.interaction'),
                              ($1, 'interaction.created', $3::jsonb, 'enrichment.interaction') RETURNING id""",
               uuid.UUID(p["id"]), json.dumps({"interaction_id": bug["id"]}),
               json.dumps({"interaction_id": str(uuid7())}))
    outbox_ids = [r["id"] for r in rows]
    until(lambda: all(sql(dsn, "SELECT pending_jobs = '{}' FROM outbox WHERE id = $1", i)[0][0]
                       for i in outbox_ids), what="both jobs finished")
    assert sql(dsn, "SELECT count(*) FROM dead_letters WHERE outbox_id = ANY($1::bigint[])", outbox_ids)[0][0] == 0
    after = router.get(f"/v1/projects/{p['id']}/interactions/{bug['id']}", headers=admin.h).json()
    assert {f: after[f] for f in FIELDS} == {f: before[f] for f in FIELDS}
    assert sql(dsn, "SELECT enriched_at FROM enrichment_signatures WHERE interaction_id = $1",
               uuid.UUID(bug["id"]))[0][0] == enriched_at


def test_signatures_of_an_earlier_method_are_re_signed_and_keep_their_group(
        router: httpx.Client, admin: Admin, topo: dict[str, Any], stack: DevStack) -> None:
    """After an upgrade of the method, old reports are re-signed (as `relay jobs run resign` asks, or the
    hourly schedule) with their groups unchanged, and a new report finds its duplicate among them."""
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    dsn = topo["cells"]["eu-west"]["database_url"]
    old = _bug(router, key, "Invoice PDF download fails", "Clicking download on an invoice gives a 404 error page.")
    other = _bug(router, key, "Add a Slack integration", "Please post new tickets to our Slack channel.")
    first = _enriched(router, admin, p, [old["id"], other["id"]])
    groups = {i: row["ai_duplicate_group_id"] for i, row in first.items()}
    current = sql(dsn, "SELECT method, terms FROM enrichment_signatures WHERE interaction_id = $1",
                  uuid.UUID(old["id"]))[0]
    # As an earlier method left them: another method's name, other terms, no embedding.
    sql(dsn, """UPDATE enrichment_signatures SET method = 'local-v0', terms = '{"zzz": 1.0}', embedding = NULL,
                                               embedding_model = NULL
                 WHERE project_id = $1""", uuid.UUID(p["id"]))
    sql(dsn, "DELETE FROM interaction_vectors WHERE project_id = $1", uuid.UUID(p["id"]))  # before the index

    done = subprocess.run([sys.executable, "-m", "relay", "jobs", "run", "resign", "--project", p["id"],
                           "--state-dir", str(stack.state_dir)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}, check=False)
    assert done.returncode == 0 and "enqueued in eu-west" in done.stdout, done.stderr

    def resigned() -> bool:
        rows = sql(dsn, "SELECT method FROM enrichment_signatures WHERE project_id = $1", uuid.UUID(p["id"]))
        return all(r["method"] == current["method"] for r in rows)

    until(resigned, what="re-signing")
    again = sql(dsn, "SELECT terms, group_id FROM enrichment_signatures WHERE interaction_id = $1",
                uuid.UUID(old["id"]))[0]
    assert json.loads(again["terms"]) == json.loads(current["terms"]) and again["group_id"] == groups[old["id"]]
    # ... and the worker's own embedding, so old and new reports are compared by words and embedding alike.
    embedded = sql(dsn, "SELECT embedding_model, cardinality(embedding) FROM enrichment_signatures "
                        "WHERE project_id = $1", uuid.UUID(p["id"]))
    assert {tuple(r) for r in embedded} == {("all-MiniLM-L6-v2", 384)}
    rows = _enriched(router, admin, p, [old["id"], other["id"]])
    assert {i: r["ai_duplicate_group_id"] for i, r in rows.items()} == groups
    # Re-signing indexed them again: a new report of the same problem is suggested the old one first.
    assert sql(dsn, "SELECT count(*) FROM interaction_vectors WHERE project_id = $1", uuid.UUID(p["id"]))[0][0] == 2
    new = _bug(router, key, "Can't download invoice PDFs", "The invoice download link shows a 404 error.")
    _enriched(router, admin, p, [new["id"]])
    similar = router.get(f"/v1/projects/{p['id']}/interactions/{new['id']}/similar", headers=admin.h).json()["data"]
    assert [s["interaction"]["id"] for s in similar] == [old["id"], other["id"]]


def test_erasing_a_person_removes_what_enrichment_kept_of_their_words(
        router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    dsn = topo["cells"]["eu-west"]["database_url"]
    canary = "zebracanary" + uuid.uuid4().hex[:8]
    theirs = _bug(router, key, "Invoice PDF misses our VAT number",
                  f"The invoice does not show the VAT id {canary}.", user={"external_id": "erase-me"})
    others = _bug(router, key, "VAT number missing on the invoice PDF", "Our VAT id is not on the invoices.")
    rows = _enriched(router, admin, p, [theirs["id"], others["id"]])
    assert sql(dsn, "SELECT count(*) FROM enrichment_signatures WHERE project_id = $1 AND terms::text LIKE $2",
               uuid.UUID(p["id"]), f"%{canary}%")[0][0] == 1

    user_id = rows[theirs["id"]]["user_id"]
    r = router.delete(f"/v1/projects/{p['id']}/end-users/{user_id}", headers=admin.h)
    assert r.status_code == 204, r.text
    assert sql(dsn, "SELECT count(*) FROM enrichment_signatures WHERE interaction_id = $1",
               uuid.UUID(theirs["id"]))[0][0] == 0
    assert sql(dsn, "SELECT count(*) FROM enrichment_signatures WHERE terms::text LIKE $1 OR $2 = ANY(keys)",
               f"%{canary}%", canary)[0][0] == 0
    # The other member keeps its enrichment.
    assert sql(dsn, "SELECT count(*) FROM enrichment_signatures WHERE interaction_id = $1",
               uuid.UUID(others["id"]))[0][0] == 1


# The openai provider, against a local OpenAI-compatible server ---------------------------------------------------


class FakeOpenAI:
    """A local server speaking the OpenAI wire format: `POST /v1/chat/completions` answers a JSON object
    with a summary and labels (one label outside the vocabulary, which must be dropped), `POST
    /v1/embeddings` a hashed bag-of-words vector, so reports sharing words are close. The first two
    requests about a report containing FLAKY get a 503; reports containing GARBLED get a chat answer that
    is not JSON."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failed = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                          "body": body})
                status, answer = fake.answer(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        text = body["messages"][-1]["content"] if path.endswith("/chat/completions") else body["input"][0]
        if "FLAKY" in text:
            with self.lock:
                if self.failed < 2:
                    self.failed += 1
                    return 503, {"error": {"message": "overloaded", "type": "server_error"}}
        if path.endswith("/chat/completions"):
            first = next((ln for ln in text.splitlines() if ln.startswith("Title: ")), text.splitlines()[-1])
            content = "this is not json" if "GARBLED" in text else json.dumps(
                {"summary": "MODEL " + first.removeprefix("Title: ")[:60],
                 "labels": ["payments", "crash", "made-up-label"]})
            return 200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        if path.endswith("/embeddings"):
            vector = [0.0] * 256
            for word in re.findall(r"[a-z]{4,}", text.lower()):
                if word not in ("type", "title", "error", "with", "that", "this", "from", "when"):
                    vector[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=2).digest(), "big") % 256] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            return 200, {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1},
                         "data": [{"object": "embedding", "index": 0, "embedding": [v / norm for v in vector]}]}
        return 404, {"error": {"message": "no such route"}}

    def texts(self) -> str:
        with self.lock:
            return json.dumps([r["body"] for r in self.requests])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture(scope="module")
def ai_stack(pg: StorePostgres, scratch: Path, fake_openai: FakeOpenAI) -> Iterator[Stack]:
    """A private topology whose eu-west cell enriches through the fake endpoint; us-west stays local."""
    running = Stack(pg, scratch, "enrichment_ai", cell_env={
        "RELAY_AI_PROVIDER": "openai", "RELAY_AI_ENDPOINT": fake_openai.url, "RELAY_AI_API_KEY": "sk-eu-test",
        "RELAY_AI_MODEL": "eu-chat-1", "RELAY_AI_EMBEDDING_MODEL": "eu-embed-1",
        "RELAY_AI_EMBEDDING_THRESHOLD": "0.6"})
    try:
        # The provider is per cell: us-west's worker runs with the default (local) configuration.
        worker = running.dev.part("worker[us-west]")
        for name in [k for k in worker.env if k.startswith("RELAY_AI_")]:
            del worker.env[name]
        running.dev.restart("worker[us-west]")
        yield running
    finally:
        running.close()


def test_openai_provider_per_cell(ai_stack: Stack, fake_openai: FakeOpenAI) -> None:
    topo = ai_stack.dev.topology
    with httpx.Client(base_url=topo["router"]["url"], timeout=30, trust_env=False) as router:
        admin = Admin(router)
        eu, us = admin.project("eu-west"), admin.project("us-west")
        eu_key, us_key = admin.key(eu, ["ingest"]), admin.key(us, ["ingest"])
        canary = "uscanary" + uuid.uuid4().hex[:8]
        first = _bug(router, eu_key, "Checkout crashes after applying a coupon",
                     "Applying the coupon code at checkout crashes the payment page.", logs=CHECKOUT_ERROR)
        second = _bug(router, eu_key, "Coupon crashes checkout",
                      "The payment page crashes at checkout when applying a coupon code.")
        unrelated = _bug(router, eu_key, "Dark theme wanted", "Please add a dark theme for night owls.")
        flaky = _bug(router, eu_key, "FLAKY calendar sync", "Calendar entries do not sync to Outlook.")
        garbled = _bug(router, eu_key, "GARBLED upload", "Uploading an image fails with an error.")
        local = _bug(router, us_key, "Checkout crashes after applying a coupon", f"Seen by {canary} at checkout.")

        eu_ids = [first["id"], second["id"], unrelated["id"], flaky["id"], garbled["id"]]
        rows = _enriched(router, admin, eu, eu_ids)
        us_row = _enriched(router, admin, us, [local["id"]])[local["id"]]

    # eu-west used the model: its summary, and only labels of the vocabulary, in the vocabulary's order.
    assert rows[first["id"]]["ai_summary"] == "MODEL Checkout crashes after applying a coupon"
    assert rows[first["id"]]["ai_labels"] == ["crash", "payments"]
    # …and says so: a language model of the region wrote the summary and labels.
    assert rows[first["id"]]["ai_method"] == {"summary": "llm:eu-chat-1", "labels": "llm:eu-chat-1",
                                              "grouping": grouping.METHOD}
    # Similar reports meet through the embeddings; the unrelated one stays apart.
    assert rows[second["id"]]["ai_duplicate_group_id"] == rows[first["id"]]["ai_duplicate_group_id"]
    assert rows[unrelated["id"]]["ai_duplicate_group_id"] == unrelated["id"]
    # A failing endpoint is retried (twice 503, then fine); a model answering out of format gets the local
    # summary and labels.
    assert rows[flaky["id"]]["ai_summary"] == "MODEL FLAKY calendar sync"
    assert rows[garbled["id"]]["ai_summary"] == "GARBLED upload — Uploading an image fails with an error."
    assert "files" in rows[garbled["id"]]["ai_labels"]
    assert rows[garbled["id"]]["ai_method"]["summary"] == "local-extractive-v1"
    dsn = topo["cells"]["eu-west"]["database_url"]
    embedded = sql(dsn, "SELECT embedding_model, cardinality(embedding) FROM enrichment_signatures "
                        "WHERE interaction_id = $1", uuid.UUID(first["id"]))
    assert [tuple(r) for r in embedded] == [("eu-embed-1", 256)]

    # us-west enriched locally and sent nothing: the endpoint never saw its text.
    assert us_row["ai_summary"] == "Checkout crashes after applying a coupon"
    assert us_row["ai_method"] == {"summary": "local-extractive-v1", "labels": "local-rules-v1",
                                   "grouping": grouping.METHOD}
    assert canary not in fake_openai.texts()
    with fake_openai.lock:
        seen = list(fake_openai.requests)
    assert {r["auth"] for r in seen} == {"Bearer sk-eu-test"}
    assert {(r["path"], r["body"]["model"]) for r in seen} == {("/v1/chat/completions", "eu-chat-1"),
                                                               ("/v1/embeddings", "eu-embed-1")}
    assert fake_openai.failed == 2
