"""The feedback board end to end through the router: public board, votes, suggestions, items and links."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections import Counter
from typing import Any

import httpx

from common.ids import uuid7
from tests.conftest import Admin, problem, sql


class Board:
    """One project with the credentials a test needs: its owner, an ingest key and a write key."""

    def __init__(self, router: httpx.Client, region: str = "us-west", admin: Admin | None = None) -> None:
        self.router = router
        self.admin = admin or Admin(router)
        self.project = self.admin.project(region)
        self.id = self.project["id"]
        self.region = region
        self.ingest = self.admin.key(self.project, ["ingest"])
        self.base = f"/v1/projects/{self.id}"

    def item(self, **fields: Any) -> dict[str, Any]:
        r = self.router.post(f"{self.base}/feedback-items", headers=self.admin.h,
                             json={"title": f"item {uuid7()}", **fields})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def get(self, item_id: str) -> dict[str, Any]:
        r = self.router.get(f"{self.base}/feedback-items/{item_id}", headers=self.admin.h)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def vote(self, item_id: str, session_id: str, **extra: Any) -> httpx.Response:
        return self.router.post(f"/v1/ingest/feedback-items/{item_id}/votes", headers=self.ingest["h"],
                                json={"session_id": session_id, **extra})

    def interaction(self, text: str = "words") -> str:
        r = self.router.post("/v1/ingest/interactions", headers=self.ingest["h"],
                             json={"type": "bug", "content": {"text": text}})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def _dsn(topo: dict[str, Any], board: Board) -> str:
    return str(topo["cells"][board.region]["database_url"])


def test_items_crud_filters_and_the_public_board(router: httpx.Client, topo: dict[str, Any]) -> None:
    b = Board(router)
    created = b.item(title="Dark mode", description="please", category="ui")
    assert created["status"] == "under_review" and created["vote_count"] == 0
    assert created["linked_interaction_count"] == 0 and created["created_by"] == b.admin.user["id"]
    assert created["project_id"] == b.id and uuid.UUID(created["id"]).version == 7
    planned = b.item(title="Export to CSV", status="planned", category="data")
    declined = b.item(title="Blink tag support", status="wont_do", category="ui")
    assert b.get(created["id"]) == created

    r = router.patch(f"{b.base}/feedback-items/{created['id']}", headers=b.admin.h,
                     json={"title": "Dark mode everywhere", "status": "in_progress", "category": None})
    assert r.status_code == 200, r.text
    updated = r.json()
    assert (updated["title"], updated["status"], updated["category"], updated["description"]) == (
        "Dark mode everywhere", "in_progress", None, "please")
    assert updated["updated_at"] > created["updated_at"]

    def ids(resp: httpx.Response) -> list[str]:
        assert resp.status_code == 200, resp.text
        return [i["id"] for i in resp.json()["data"]]

    listed = router.get(f"{b.base}/feedback-items", headers=b.admin.h)
    assert ids(listed) == [declined["id"], planned["id"], created["id"]]  # newest first
    assert ids(router.get(f"{b.base}/feedback-items?status=wont_do", headers=b.admin.h)) == [declined["id"]]
    assert ids(router.get(f"{b.base}/feedback-items?category=data", headers=b.admin.h)) == [planned["id"]]
    assert ids(router.get(f"{b.base}/feedback-items?q=MODE", headers=b.admin.h)) == [created["id"]]
    assert ids(router.get(f"{b.base}/feedback-items?q=50%25_off", headers=b.admin.h)) == []
    first = router.get(f"{b.base}/feedback-items?limit=2", headers=b.admin.h).json()
    assert [i["id"] for i in first["data"]] == [declined["id"], planned["id"]] and first["next_cursor"]
    rest = router.get(f"{b.base}/feedback-items?limit=2&cursor={first['next_cursor']}", headers=b.admin.h).json()
    assert [i["id"] for i in rest["data"]] == [created["id"]] and rest["next_cursor"] is None

    # Votes order the public board; declined items are not on it.
    for _ in range(2):
        assert b.vote(planned["id"], str(uuid7())).status_code == 201
    assert b.vote(created["id"], str(uuid7())).status_code == 201
    board = router.get("/v1/ingest/feedback-items", headers=b.ingest["h"])
    assert board.status_code == 200, board.text
    body = board.json()
    assert [i["id"] for i in body["data"]] == [planned["id"], created["id"]] and body["next_cursor"] is None
    assert body["data"][0] == {"id": planned["id"], "title": "Export to CSV", "description": None,
                               "status": "planned", "category": "data", "vote_count": 2,
                               "created_at": planned["created_at"]}
    newest = router.get("/v1/ingest/feedback-items?sort=new", headers=b.ingest["h"]).json()["data"]
    assert [i["id"] for i in newest] == [planned["id"], created["id"]]
    assert [i["id"] for i in router.get("/v1/ingest/feedback-items?status=in_progress",
                                        headers=b.ingest["h"]).json()["data"]] == [created["id"]]
    page1 = router.get("/v1/ingest/feedback-items?limit=1", headers=b.ingest["h"]).json()
    page2 = router.get(f"/v1/ingest/feedback-items?limit=1&cursor={page1['next_cursor']}",
                       headers=b.ingest["h"]).json()
    assert [i["id"] for i in page1["data"] + page2["data"]] == [planned["id"], created["id"]]
    assert page2["next_cursor"] is None
    by_votes = router.get(f"{b.base}/feedback-items?sort=votes", headers=b.admin.h).json()["data"]
    assert [i["vote_count"] for i in by_votes] == [2, 1, 0]

    # Every write was audited, without the user's words.
    audit = sql(_dsn(topo, b), "SELECT action, target_id, meta::text AS meta FROM audit_logs WHERE project_id = $1"
                " AND target_type = 'feedback_item' ORDER BY created_at", uuid.UUID(b.id))
    actions = [(a["action"], a["target_id"]) for a in audit]
    assert actions[:4] == [("feedback_item.created", created["id"]), ("feedback_item.created", planned["id"]),
                           ("feedback_item.created", declined["id"]), ("feedback_item.updated", created["id"])]
    assert all("Dark mode" not in a["meta"] and "please" not in a["meta"] for a in audit)

    assert router.delete(f"{b.base}/feedback-items/{declined['id']}", headers=b.admin.h).status_code == 204
    problem(router.get(f"{b.base}/feedback-items/{declined['id']}", headers=b.admin.h), 404)
    problem(router.delete(f"{b.base}/feedback-items/{declined['id']}", headers=b.admin.h), 404)
    assert sql(_dsn(topo, b), "SELECT action FROM audit_logs WHERE project_id = $1 ORDER BY created_at DESC LIMIT 1",
               uuid.UUID(b.id))[0]["action"] == "feedback_item.deleted"


def test_fifty_sessions_vote_at_once(router: httpx.Client, topo: dict[str, Any]) -> None:
    b = Board(router)
    item = b.item()
    sessions = [str(uuid7()) for _ in range(50)]
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda s: b.vote(item["id"], s, user={"external_id": f"u-{s}"}), sessions))
    assert [r.status_code for r in responses] == [201] * 50, [r.text for r in responses if r.status_code != 201]
    assert {r.json()["session_id"] for r in responses} == set(sessions)
    assert sorted(r.json()["vote_count"] for r in responses) == list(range(1, 51))
    assert all(r.json()["user_id"] and r.json()["feedback_item_id"] == item["id"] for r in responses)
    assert b.get(item["id"])["vote_count"] == 50
    votes = router.get(f"{b.base}/feedback-items/{item['id']}/votes?limit=200", headers=b.admin.h).json()
    assert len(votes["data"]) == 50 and votes["next_cursor"] is None
    assert {v["id"] for v in votes["data"]} == {r.json()["id"] for r in responses}
    dsn = _dsn(topo, b)
    assert sql(dsn, "SELECT count(*) AS n FROM sessions WHERE project_id = $1", uuid.UUID(b.id))[0]["n"] == 50
    assert sql(dsn, "SELECT count(*) AS n FROM outbox WHERE project_id = $1 AND kind = 'vote.created'",
               uuid.UUID(b.id))[0]["n"] == 50
    # Votes page with cursors too.
    first = router.get(f"{b.base}/feedback-items/{item['id']}/votes?limit=30", headers=b.admin.h).json()
    second = router.get(f"{b.base}/feedback-items/{item['id']}/votes?limit=30&cursor={first['next_cursor']}",
                        headers=b.admin.h).json()
    assert len(first["data"]) == 30 and len(second["data"]) == 20 and second["next_cursor"] is None
    assert {v["id"] for v in first["data"] + second["data"]} == {v["id"] for v in votes["data"]}


def test_one_vote_per_session_and_unvote(router: httpx.Client, topo: dict[str, Any]) -> None:
    b = Board(router)
    item = b.item()
    session = str(uuid7())
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: b.vote(item["id"], session), range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert {r.json()["vote_count"] for r in responses} == {1}
    assert b.get(item["id"])["vote_count"] == 1
    dsn = _dsn(topo, b)
    assert sql(dsn, "SELECT count(*) AS n FROM feedback_votes WHERE feedback_item_id = $1",
               uuid.UUID(item["id"]))[0]["n"] == 1
    assert sql(dsn, "SELECT count(*) AS n FROM outbox WHERE project_id = $1 AND kind = 'vote.created'",
               uuid.UUID(b.id))[0]["n"] == 1
    other = b.item()
    board = router.get(f"/v1/ingest/feedback-items?session_id={session}", headers=b.ingest["h"]).json()["data"]
    assert {i["id"]: i["voted"] for i in board} == {item["id"]: True, other["id"]: False}

    url = f"/v1/ingest/feedback-items/{item['id']}/votes?session_id={session}"
    r = router.delete(url, headers=b.ingest["h"])
    assert r.status_code == 200 and r.json() == {"feedback_item_id": item["id"], "vote_count": 0, "voted": False}
    # Withdrawing again, even concurrently, changes nothing.
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        again = list(pool.map(lambda _: router.delete(url, headers=b.ingest["h"]), range(5)))
    assert [a.json()["vote_count"] for a in again] == [0] * 5
    assert b.get(item["id"])["vote_count"] == 0
    assert b.vote(item["id"], session).status_code == 201
    assert b.get(item["id"])["vote_count"] == 1

    # Many sessions voting and withdrawing at once leave an exact count.
    sessions = [str(uuid7()) for _ in range(20)]
    for s in sessions[:10]:
        assert b.vote(other["id"], s).status_code == 201

    def flip(s: str) -> int:
        if s in sessions[:10]:
            return router.delete(f"/v1/ingest/feedback-items/{other['id']}/votes?session_id={s}",
                                 headers=b.ingest["h"]).status_code
        return b.vote(other["id"], s).status_code

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = Counter(pool.map(flip, sessions))
    assert codes == {200: 10, 201: 10}
    assert b.get(other["id"])["vote_count"] == 10
    assert sql(dsn, "SELECT count(*) AS n FROM feedback_votes WHERE feedback_item_id = $1",
               uuid.UUID(other["id"]))[0]["n"] == 10

    # A declined item takes no votes; an unknown one is absent.
    declined = b.item(status="wont_do")
    problem(b.vote(declined["id"], str(uuid7())), 404)
    problem(b.vote(str(uuid7()), str(uuid7())), 404)
    problem(router.delete(f"/v1/ingest/feedback-items/{uuid7()}/votes?session_id={session}",
                          headers=b.ingest["h"]), 404)


def test_suggestions_become_items_with_a_linked_interaction(router: httpx.Client, topo: dict[str, Any]) -> None:
    b = Board(router)
    session = str(uuid7())
    body = {"id": str(uuid7()), "title": "Keyboard shortcuts", "description": "j/k to move", "category": "ux",
            "session_id": session, "user": {"external_id": "alice", "email": "a@example.com"}}
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _: router.post("/v1/ingest/feedback-items", headers=b.ingest["h"],
                                                        json=body), range(5)))
    assert sorted(r.status_code for r in responses) == [200] * 4 + [201], [r.text for r in responses]
    created = next(r.json() for r in responses if r.status_code == 201)
    assert created == {"id": body["id"], "title": "Keyboard shortcuts", "description": "j/k to move",
                       "status": "under_review", "category": "ux", "vote_count": 0,
                       "created_at": created["created_at"]}
    item = b.get(body["id"])
    assert item["linked_interaction_count"] == 1 and item["created_by"] is None
    links = router.get(f"{b.base}/feedback-items/{body['id']}/links", headers=b.admin.h).json()["data"]
    assert len(links) == 1
    interaction = router.get(f"{b.base}/interactions/{links[0]['interaction_id']}", headers=b.admin.h).json()
    assert interaction["type"] == "feedback" and interaction["session_id"] == session
    assert interaction["content"] == {"title": "Keyboard shortcuts", "description": "j/k to move", "category": "ux"}
    assert interaction["user_id"]
    back = router.get(f"{b.base}/interactions/{interaction['id']}/links", headers=b.admin.h).json()
    assert back["data"] == [{"kind": "feedback", "id": links[0]["id"], "feedback_item_id": body["id"],
                             "title": "Keyboard shortcuts", "status": "under_review",
                             "created_at": links[0]["created_at"]}]
    dsn = _dsn(topo, b)
    assert sql(dsn, "SELECT count(*) AS n FROM interactions WHERE project_id = $1", uuid.UUID(b.id))[0]["n"] == 1
    assert sql(dsn, "SELECT interaction_count FROM sessions WHERE id = $1",
               uuid.UUID(session))[0]["interaction_count"] == 1
    assert sql(dsn, "SELECT count(*) AS n FROM outbox WHERE project_id = $1 AND kind = 'interaction.created'",
               uuid.UUID(b.id))[0]["n"] == 1
    # The project's default privacy rules redact before the board (or anything) stores the words.
    r = router.post("/v1/ingest/feedback-items", headers=b.ingest["h"],
                    json={"title": "Charge my card 4111 1111 1111 1111 please",
                          "description": "Authorization: Bearer abcdefghijklmnopqrstuvwxyz123456"})
    assert r.status_code == 201, r.text
    shown = r.json()
    assert "4111" not in shown["title"] and "redacted" in shown["title"]
    assert "abcdefghijklmnop" not in shown["description"]
    stored = sql(dsn, "SELECT i.content_json::text AS content, i.privacy_scope FROM feedback_links l"
                 " JOIN interactions i ON i.id = l.interaction_id WHERE l.feedback_item_id = $1",
                 uuid.UUID(shown["id"]))[0]
    assert "4111" not in stored["content"] and "abcdefghijklmnop" not in stored["content"]
    assert '"total"' in stored["privacy_scope"] and "4111" not in stored["privacy_scope"]
    # Without an id or a session it still works; the item's id in another project is refused.
    r = router.post("/v1/ingest/feedback-items", headers=b.ingest["h"], json={"title": "Plain"})
    assert r.status_code == 201 and r.json()["title"] == "Plain"
    other = Board(router, "us-west")  # same cell, so the id is taken
    problem(router.post("/v1/ingest/feedback-items", headers=other.ingest["h"], json=body), 409)


def test_links_stay_exact_under_concurrent_link_and_unlink(router: httpx.Client, topo: dict[str, Any]) -> None:
    b = Board(router)
    item = b.item()
    interactions = [b.interaction(f"bug {i}") for i in range(20)]
    links_url = f"{b.base}/feedback-items/{item['id']}/links"

    def link(iid: str) -> httpx.Response:
        return router.post(links_url, headers=b.admin.h, json={"interaction_id": iid})

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        responses = list(pool.map(link, interactions * 2))
    assert Counter(r.status_code for r in responses) == {201: 20, 200: 20}, [r.text for r in responses]
    assert {r.json()["interaction_id"] for r in responses} == set(interactions)
    assert b.get(item["id"])["linked_interaction_count"] == 20

    # Unlink half (each twice) while re-linking the other half: the count ends exact.
    def churn(job: tuple[str, str]) -> int:
        kind, iid = job
        if kind == "unlink":
            return router.delete(f"{links_url}/{iid}", headers=b.admin.h).status_code
        return link(iid).status_code

    jobs = [("unlink", i) for i in interactions[:10]] * 2 + [("link", i) for i in interactions[10:]]
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        codes = Counter(pool.map(churn, jobs))
    assert codes == {204: 10, 404: 10, 200: 10}
    assert b.get(item["id"])["linked_interaction_count"] == 10
    listed = router.get(f"{links_url}?limit=200", headers=b.admin.h).json()
    assert {lk["interaction_id"] for lk in listed["data"]} == set(interactions[10:])
    page = router.get(f"{links_url}?limit=4", headers=b.admin.h).json()
    assert len(page["data"]) == 4 and page["next_cursor"]
    dsn = _dsn(topo, b)
    assert sql(dsn, "SELECT count(*) AS n FROM audit_logs WHERE project_id = $1 AND action = 'feedback_item.linked'",
               uuid.UUID(b.id))[0]["n"] == 20
    assert sql(dsn, "SELECT count(*) AS n FROM audit_logs WHERE project_id = $1"
               " AND action = 'feedback_item.unlinked'", uuid.UUID(b.id))[0]["n"] == 10

    # An interaction's links: feedback items and tracker issues.
    iid = interactions[15]
    sql(dsn, "INSERT INTO integration_links (id, project_id, provider, external_id, internal_type, internal_id,"
        " external_url) VALUES ($1, $2, 'linear', 'ENG-42', 'interaction', $3, 'https://linear.app/x/ENG-42')",
        uuid7(), uuid.UUID(b.id), uuid.UUID(iid))
    second = b.item()
    assert link(iid).status_code == 200
    r = router.post(f"{b.base}/feedback-items/{second['id']}/links", headers=b.admin.h, json={"interaction_id": iid})
    assert r.status_code == 201 and r.json()["linked_interaction_count"] == 1
    got = router.get(f"{b.base}/interactions/{iid}/links", headers=b.admin.h)
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    assert [(d["kind"], d.get("feedback_item_id")) for d in data] == [
        ("feedback", item["id"]), ("feedback", second["id"]), ("issue", None)]
    assert {k: data[2][k] for k in ("provider", "external_id", "external_url")} == {
        "provider": "linear", "external_id": "ENG-42", "external_url": "https://linear.app/x/ENG-42"}
    assert router.get(f"{b.base}/interactions/{interactions[0]}/links", headers=b.admin.h).json() == {
        "data": [], "next_cursor": None}

    # Deleting the item takes its links with it.
    assert router.delete(f"{b.base}/feedback-items/{second['id']}", headers=b.admin.h).status_code == 204
    assert len(router.get(f"{b.base}/interactions/{iid}/links", headers=b.admin.h).json()["data"]) == 2


def test_another_projects_ids_are_404_everywhere(router: httpx.Client, topo: dict[str, Any]) -> None:
    # Same cell, so only the cell's own project scoping stands between them.
    a = Board(router, "us-west")
    b = Board(router, "us-west")
    b_item = b.item(title="B's secret item")
    b_interaction = b.interaction("B's words")
    b_session = str(uuid7())
    assert b.vote(b_item["id"], b_session).status_code == 201
    assert router.post(f"{b.base}/feedback-items/{b_item['id']}/links", headers=b.admin.h,
                       json={"interaction_id": b_interaction}).status_code == 201
    a_item = a.item()
    a_write = a.admin.key(a.project, ["write"])
    a_interaction = a.interaction()

    for creds in (a.admin.h, a_write["h"]):
        calls: list[tuple[str, str, dict[str, Any] | None]] = []
        for base in (a.base, b.base):  # B's ids under A's project, and B's project itself
            it = f"{base}/feedback-items/{b_item['id']}"
            calls += [
                ("GET", it, None),
                ("PATCH", it, {"title": "pwned"}),
                ("DELETE", it, None),
                ("GET", f"{it}/votes", None),
                ("GET", f"{it}/links", None),
                ("POST", f"{it}/links", {"interaction_id": b_interaction}),
                ("DELETE", f"{it}/links/{b_interaction}", None),
                ("GET", f"{base}/interactions/{b_interaction}/links", None),
            ]
        calls += [
            ("GET", f"{b.base}/feedback-items", None),
            ("POST", f"{b.base}/feedback-items", {"title": "into B"}),
            # A's item, B's interaction: refused, and nothing linked.
            ("POST", f"{a.base}/feedback-items/{a_item['id']}/links", {"interaction_id": b_interaction}),
            ("DELETE", f"{a.base}/feedback-items/{a_item['id']}/links/{b_interaction}", None),
            ("GET", f"{a.base}/feedback-items/{uuid7()}", None),
        ]
        for method, path, body in calls:
            body_404 = problem(router.request(method, path, headers=creds, json=body), 404)
            assert "B's" not in str(body_404)
    problem(router.get(f"{a.base}/interactions/{a_interaction}/links", headers=b.admin.h), 404)

    # A's ingest key cannot see, vote for or withdraw B's votes.
    problem(a.vote(b_item["id"], str(uuid7())), 404)
    problem(a.vote(b_item["id"], b_session), 404)
    problem(router.delete(f"/v1/ingest/feedback-items/{b_item['id']}/votes?session_id={b_session}",
                          headers=a.ingest["h"]), 404)
    assert router.get("/v1/ingest/feedback-items", headers=a.ingest["h"]).json()["data"] == [
        {k: a_item[k] for k in ("id", "title", "description", "status", "category", "vote_count", "created_at")}]
    # A session id of project B cannot carry a vote in project A.
    body = problem(a.vote(a_item["id"], b_session), 422)
    assert body["errors"][0]["pointer"] == "/session_id"

    after = b.get(b_item["id"])
    assert (after["title"], after["vote_count"], after["linked_interaction_count"]) == ("B's secret item", 1, 1)
    assert a.get(a_item["id"])["linked_interaction_count"] == 0
    assert sql(_dsn(topo, b), "SELECT count(*) AS n FROM audit_logs WHERE project_id = $1"
               " AND actor_id = ANY($2::text[])", uuid.UUID(b.id),
               [a.admin.user["id"], a_write["key_prefix"]])[0]["n"] == 0


def test_roles_and_scopes(router: httpx.Client) -> None:
    b = Board(router)
    item = b.item()
    iid = b.interaction()
    viewer = b.admin.member(b.project, "viewer")
    read = b.admin.key(b.project, ["read"])
    write = b.admin.key(b.project, ["write"])
    it = f"{b.base}/feedback-items/{item['id']}"
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", f"{b.base}/feedback-items", {"title": "x"}),
        ("PATCH", it, {"status": "planned"}),
        ("DELETE", it, None),
        ("POST", f"{it}/links", {"interaction_id": iid}),
        ("DELETE", f"{it}/links/{iid}", None),
    ]
    reads = [f"{b.base}/feedback-items", it, f"{it}/votes", f"{it}/links", f"{b.base}/interactions/{iid}/links"]
    for creds in (viewer.h, read["h"]):
        for method, path, body in writes:
            problem(router.request(method, path, headers=creds, json=body), 403)
        for path in reads:
            assert router.get(path, headers=creds).status_code == 200, path
    # The ingest key reaches the board, never management; read and write keys never reach ingest.
    for path in reads:
        problem(router.get(path, headers=b.ingest["h"]), 403)
    for method, path, body in writes:
        problem(router.request(method, path, headers=b.ingest["h"], json=body), 403)
    for creds in (read["h"], write["h"]):
        problem(router.get("/v1/ingest/feedback-items", headers=creds), 403)
        problem(router.post(f"/v1/ingest/feedback-items/{item['id']}/votes", headers=creds,
                            json={"session_id": str(uuid7())}), 403)
    assert b.get(item["id"]) == item  # nothing changed
    made = router.post(f"{b.base}/feedback-items", headers=write["h"], json={"title": "by key"})
    assert made.status_code == 201 and made.json()["created_by"] is None
    assert router.post(f"{it}/links", headers=write["h"], json={"interaction_id": iid}).status_code == 201


def test_invalid_input_is_422_with_pointers(router: httpx.Client) -> None:
    b = Board(router)
    item = b.item()
    url = f"{b.base}/feedback-items"

    def pointer(resp: httpx.Response) -> str:
        return str(problem(resp, 422)["errors"][0]["pointer"])

    assert pointer(router.post(url, headers=b.admin.h, json={})) == "/title"
    assert pointer(router.post(url, headers=b.admin.h, json={"title": ""})) == "/title"
    assert pointer(router.post(url, headers=b.admin.h, json={"title": "   "})) == "/title"
    assert pointer(router.post(url, headers=b.admin.h, json={"title": "x" * 501})) == "/title"
    assert pointer(router.post(url, headers=b.admin.h, json={"title": "x", "status": "done"})) == "/status"
    assert pointer(router.post(url, headers=b.admin.h, json={"title": "x", "category": "c" * 101})) == "/category"
    assert pointer(router.patch(f"{url}/{item['id']}", headers=b.admin.h, json={"title": None})) == "/title"
    assert pointer(router.patch(f"{url}/{item['id']}", headers=b.admin.h, json={"status": 3})) == "/status"
    problem(router.patch(f"{url}/{item['id']}", headers=b.admin.h, json={}), 422)
    assert pointer(router.post(f"{url}/{item['id']}/links", headers=b.admin.h, json={})) == "/interaction_id"
    assert pointer(router.post(f"{url}/{item['id']}/links", headers=b.admin.h,
                               json={"interaction_id": "nope"})) == "/interaction_id"
    votes = f"/v1/ingest/feedback-items/{item['id']}/votes"
    assert pointer(router.post(votes, headers=b.ingest["h"], json={})) == "/session_id"
    assert pointer(router.post(votes, headers=b.ingest["h"], json={"session_id": "x"})) == "/session_id"
    assert pointer(router.post(votes, headers=b.ingest["h"],
                               json={"session_id": str(uuid7()), "user": {"external_id": ""}})) == "/user"
    assert pointer(router.post("/v1/ingest/feedback-items", headers=b.ingest["h"], json={"title": " "})) == "/title"
    assert problem(router.delete(votes, headers=b.ingest["h"]), 422)["errors"][0]["pointer"] == "/session_id"
    problem(router.delete(f"{votes}?session_id=nope", headers=b.ingest["h"]), 422)
    for query in ("limit=0", "limit=1000", "cursor=garbage", "sort=random", "status=wont_do"):
        problem(router.get(f"/v1/ingest/feedback-items?{query}", headers=b.ingest["h"]), 422)
    for query in ("limit=1000", "cursor=garbage", "status=nope", f"q={'q' * 501}"):
        problem(router.get(f"{url}?{query}", headers=b.admin.h), 422)
    # A newest-first cursor is not a most-voted one.
    b.item()
    page = router.get("/v1/ingest/feedback-items?sort=new&limit=1", headers=b.ingest["h"]).json()
    problem(router.get(f"/v1/ingest/feedback-items?cursor={page['next_cursor']}", headers=b.ingest["h"]), 422)
    assert b.get(item["id"]) == item
