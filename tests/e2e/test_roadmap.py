"""The roadmap end to end through the router: items, the public roadmap, ordering and linked feedback."""

from __future__ import annotations

import concurrent.futures
import random
import uuid
from collections import Counter
from typing import Any

import httpx

from common.ids import uuid7
from tests.conftest import Admin, problem, sql


class Roadmap:
    """One project with its owner and an ingest key."""

    def __init__(self, router: httpx.Client, region: str = "us-west") -> None:
        self.router = router
        self.admin = Admin(router)
        self.project = self.admin.project(region)
        self.id = self.project["id"]
        self.region = region
        self.ingest = self.admin.key(self.project, ["ingest"])
        self.base = f"/v1/projects/{self.id}"

    def item(self, **fields: Any) -> dict[str, Any]:
        r = self.router.post(f"{self.base}/roadmap-items", headers=self.admin.h,
                             json={"title": f"item {uuid7()}", **fields})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def feedback(self) -> dict[str, Any]:
        r = self.router.post(f"{self.base}/feedback-items", headers=self.admin.h, json={"title": f"fb {uuid7()}"})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def get(self, item_id: str) -> dict[str, Any]:
        r = self.router.get(f"{self.base}/roadmap-items/{item_id}", headers=self.admin.h)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def order(self) -> list[str]:
        r = self.router.get(f"{self.base}/roadmap-items?limit=200", headers=self.admin.h)
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["data"]]


def test_items_and_the_public_roadmap(router: httpx.Client, topo: dict[str, Any]) -> None:
    m = Roadmap(router)
    a = m.item(title="SSO", description="SAML and OIDC", eta="2030-03-01T00:00:00Z")
    b = m.item(title="Internal tooling", visibility="private", status="in_progress")
    c = m.item(title="Mobile SDK", status="shipped")
    assert (a["sort_order"], b["sort_order"], c["sort_order"]) == (0, 1, 2)  # appended in turn
    assert a["visibility"] == "public" and a["status"] == "planned" and a["linked_feedback_count"] == 0
    assert a["eta"] == "2030-03-01T00:00:00Z" and a["project_id"] == m.id
    first = m.item(title="Top", sort_order=-5)
    assert m.get(a["id"]) == a
    assert m.order() == [first["id"], a["id"], b["id"], c["id"]]

    public = router.get("/v1/ingest/roadmap", headers=m.ingest["h"])
    assert public.status_code == 200, public.text
    assert public.json() == {"data": [
        {"id": first["id"], "title": "Top", "description": None, "status": "planned", "sort_order": -5, "eta": None},
        {"id": a["id"], "title": "SSO", "description": "SAML and OIDC", "status": "planned", "sort_order": 0,
         "eta": "2030-03-01T00:00:00Z"},
        {"id": c["id"], "title": "Mobile SDK", "description": None, "status": "shipped", "sort_order": 2,
         "eta": None}], "next_cursor": None}
    shipped = router.get("/v1/ingest/roadmap?status=shipped", headers=m.ingest["h"]).json()["data"]
    assert [i["id"] for i in shipped] == [c["id"]]
    page1 = router.get("/v1/ingest/roadmap?limit=2", headers=m.ingest["h"]).json()
    page2 = router.get(f"/v1/ingest/roadmap?limit=2&cursor={page1['next_cursor']}", headers=m.ingest["h"]).json()
    assert [i["id"] for i in page1["data"] + page2["data"]] == [first["id"], a["id"], c["id"]]
    assert page2["next_cursor"] is None

    private = router.get(f"{m.base}/roadmap-items?visibility=private", headers=m.admin.h).json()["data"]
    assert [i["id"] for i in private] == [b["id"]]
    r = router.patch(f"{m.base}/roadmap-items/{b['id']}", headers=m.admin.h,
                     json={"visibility": "public", "eta": "2031-01-01T12:00:00+02:00", "description": "now public"})
    assert r.status_code == 200, r.text
    assert (r.json()["visibility"], r.json()["eta"], r.json()["title"]) == (
        "public", "2031-01-01T10:00:00Z", "Internal tooling")
    assert b["id"] in [i["id"] for i in router.get("/v1/ingest/roadmap", headers=m.ingest["h"]).json()["data"]]
    r = router.patch(f"{m.base}/roadmap-items/{b['id']}", headers=m.admin.h, json={"eta": None, "sort_order": 99})
    assert (r.json()["eta"], r.json()["sort_order"]) == (None, 99)
    assert m.order()[-1] == b["id"]

    assert router.delete(f"{m.base}/roadmap-items/{c['id']}", headers=m.admin.h).status_code == 204
    problem(router.get(f"{m.base}/roadmap-items/{c['id']}", headers=m.admin.h), 404)
    problem(router.delete(f"{m.base}/roadmap-items/{c['id']}", headers=m.admin.h), 404)
    audit = sql(topo["cells"][m.region]["database_url"],
                "SELECT action, meta::text AS meta FROM audit_logs WHERE project_id = $1"
                " AND target_type = 'roadmap_item' ORDER BY created_at", uuid.UUID(m.id))
    assert [x["action"] for x in audit] == ["roadmap_item.created"] * 4 + ["roadmap_item.updated"] * 2 + [
        "roadmap_item.deleted"]
    assert all("SSO" not in x["meta"] and "now public" not in x["meta"] for x in audit)


def test_reorder(router: httpx.Client, topo: dict[str, Any]) -> None:
    m = Roadmap(router)
    items = [m.item(title=f"r{i}")["id"] for i in range(6)]
    url = f"{m.base}/roadmap-items/reorder"
    r = router.post(url, headers=m.admin.h, json={"ids": [items[4], items[1]]})
    assert r.status_code == 200, r.text
    expected = [items[4], items[1], items[0], items[2], items[3], items[5]]
    assert [i["id"] for i in r.json()["data"]] == expected
    assert [i["sort_order"] for i in r.json()["data"]] == list(range(6))
    assert m.order() == expected
    assert [i["id"] for i in router.get("/v1/ingest/roadmap", headers=m.ingest["h"]).json()["data"]] == expected
    full = list(reversed(items))
    assert [i["id"] for i in router.post(url, headers=m.admin.h, json={"ids": full}).json()["data"]] == full
    assert sql(topo["cells"][m.region]["database_url"],
               "SELECT count(*) AS n FROM audit_logs WHERE project_id = $1 AND action = 'roadmap_item.reordered'",
               uuid.UUID(m.id))[0]["n"] == 2

    # All or nothing: an id that is not this project's changes nothing.
    other = Roadmap(router)
    foreign = other.item()["id"]
    problem(router.post(url, headers=m.admin.h, json={"ids": [items[0], foreign]}), 404)
    problem(router.post(url, headers=m.admin.h, json={"ids": [str(uuid7())]}), 404)
    assert m.order() == full
    assert other.order() == [foreign]

    # Concurrent reorders each apply whole: the result is one of the permutations, numbered 0..n-1.
    rng = random.Random(7)
    perms = [rng.sample(items, len(items)) for _ in range(12)]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda p: router.post(url, headers=m.admin.h, json={"ids": p}).status_code, perms))
    assert codes == [200] * 12
    listed = router.get(f"{m.base}/roadmap-items", headers=m.admin.h).json()["data"]
    assert [i["id"] for i in listed] in perms
    assert [i["sort_order"] for i in listed] == list(range(6))


def test_linked_feedback_counts_stay_exact(router: httpx.Client, topo: dict[str, Any]) -> None:
    m = Roadmap(router)
    item = m.item()
    fb = [m.feedback()["id"] for _ in range(12)]
    url = f"{m.base}/roadmap-items/{item['id']}/feedback"

    def link(fid: str) -> httpx.Response:
        return router.post(url, headers=m.admin.h, json={"feedback_item_id": fid})

    r = link(fb[0])
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["roadmap_item_id"], body["feedback_item_id"], body["linked_feedback_count"]) == (
        item["id"], fb[0], 1)
    assert body["status"] == "under_review" and body["vote_count"] == 0 and body["title"].startswith("fb ")
    again = link(fb[0])
    assert again.status_code == 200 and again.json()["id"] == body["id"] and again.json()["linked_feedback_count"] == 1

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        codes = Counter(r.status_code for r in pool.map(link, fb * 2))
    assert codes == {201: 11, 200: 13}
    assert m.get(item["id"])["linked_feedback_count"] == 12

    # Unlink half (each twice, by path and by body) while linking the rest again.
    def churn(job: tuple[str, str]) -> int:
        kind, fid = job
        if kind == "path":
            return router.delete(f"{url}/{fid}", headers=m.admin.h).status_code
        if kind == "body":
            return router.request("DELETE", url, headers=m.admin.h, json={"feedback_item_id": fid}).status_code
        return link(fid).status_code

    jobs = [("path", f) for f in fb[:6]] + [("body", f) for f in fb[:6]] + [("link", f) for f in fb[6:]]
    with concurrent.futures.ThreadPoolExecutor(18) as pool:
        codes = Counter(pool.map(churn, jobs))
    assert codes == {204: 6, 404: 6, 200: 6}
    assert m.get(item["id"])["linked_feedback_count"] == 6
    listed = router.get(f"{url}?limit=200", headers=m.admin.h).json()
    assert {x["feedback_item_id"] for x in listed["data"]} == set(fb[6:]) and listed["next_cursor"] is None
    page1 = router.get(f"{url}?limit=4", headers=m.admin.h).json()
    page2 = router.get(f"{url}?limit=4&cursor={page1['next_cursor']}", headers=m.admin.h).json()
    assert len(page1["data"]) == 4 and len(page2["data"]) == 2 and page2["next_cursor"] is None
    assert {x["feedback_item_id"] for x in page1["data"] + page2["data"]} == set(fb[6:])

    # Deleting a feedback item uncounts it on every roadmap item that answered it, even while others link.
    second = m.item()
    assert router.post(f"{m.base}/roadmap-items/{second['id']}/feedback", headers=m.admin.h,
                       json={"feedback_item_id": fb[6]}).status_code == 201

    def delete_or_link(job: tuple[str, str]) -> int:
        kind, fid = job
        if kind == "delete":
            return router.delete(f"{m.base}/feedback-items/{fid}", headers=m.admin.h).status_code
        return router.post(f"{m.base}/roadmap-items/{second['id']}/feedback", headers=m.admin.h,
                           json={"feedback_item_id": fid}).status_code

    jobs = [("delete", fb[6]), ("delete", fb[7])] + [("link", f) for f in fb[7:]]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        codes = Counter(pool.map(delete_or_link, jobs))
    assert codes[204] == 2 and codes[201] + codes[404] == 5
    dsn = topo["cells"][m.region]["database_url"]
    for rid in (item["id"], second["id"]):
        actual = sql(dsn, "SELECT count(*) AS n FROM roadmap_feedback_links WHERE roadmap_item_id = $1",
                     uuid.UUID(rid))[0]["n"]
        assert m.get(rid)["linked_feedback_count"] == actual, rid
    assert m.get(item["id"])["linked_feedback_count"] == 4
    # Deleting the roadmap item leaves the feedback items alone.
    assert router.delete(f"{m.base}/roadmap-items/{item['id']}", headers=m.admin.h).status_code == 204
    assert router.get(f"{m.base}/feedback-items/{fb[8]}", headers=m.admin.h).status_code == 200
    assert not sql(dsn, "SELECT 1 FROM roadmap_feedback_links WHERE roadmap_item_id = $1", uuid.UUID(item["id"]))


def test_another_projects_ids_are_404_everywhere(router: httpx.Client) -> None:
    a, b = Roadmap(router), Roadmap(router)  # same cell: only the cell's project scoping separates them
    b_item = b.item(title="B's plan", visibility="private")
    b_fb = b.feedback()["id"]
    assert router.post(f"{b.base}/roadmap-items/{b_item['id']}/feedback", headers=b.admin.h,
                       json={"feedback_item_id": b_fb}).status_code == 201
    a_item = a.item()
    a_fb = a.feedback()["id"]
    a_write = a.admin.key(a.project, ["write"])
    for creds in (a.admin.h, a_write["h"]):
        calls: list[tuple[str, str, dict[str, Any] | None]] = []
        for base in (a.base, b.base):
            it = f"{base}/roadmap-items/{b_item['id']}"
            calls += [
                ("GET", it, None),
                ("PATCH", it, {"title": "pwned"}),
                ("DELETE", it, None),
                ("GET", f"{it}/feedback", None),
                ("POST", f"{it}/feedback", {"feedback_item_id": b_fb}),
                ("DELETE", f"{it}/feedback/{b_fb}", None),
                ("DELETE", f"{it}/feedback", {"feedback_item_id": b_fb}),
                ("POST", f"{base}/roadmap-items/reorder", {"ids": [b_item["id"]]}),
            ]
        calls += [
            ("GET", f"{b.base}/roadmap-items", None),
            ("POST", f"{b.base}/roadmap-items", {"title": "into B"}),
            ("POST", f"{a.base}/roadmap-items/{a_item['id']}/feedback", {"feedback_item_id": b_fb}),
            ("POST", f"{a.base}/roadmap-items/{b_item['id']}/feedback", {"feedback_item_id": a_fb}),
            ("DELETE", f"{a.base}/roadmap-items/{a_item['id']}/feedback/{b_fb}", None),
        ]
        for method, path, body in calls:
            got = problem(router.request(method, path, headers=creds, json=body), 404)
            assert "B's" not in str(got)
    # A's ingest key sees A's public roadmap only.
    assert [i["id"] for i in router.get("/v1/ingest/roadmap", headers=a.ingest["h"]).json()["data"]] == [
        a_item["id"]]
    assert router.get("/v1/ingest/roadmap", headers=b.ingest["h"]).json()["data"] == []  # B's only item is private
    after = b.get(b_item["id"])
    assert (after["title"], after["linked_feedback_count"], after["sort_order"]) == ("B's plan", 1, 0)
    assert a.get(a_item["id"])["linked_feedback_count"] == 0


def test_roles_scopes_and_invalid_input(router: httpx.Client) -> None:
    m = Roadmap(router)
    item = m.item()
    fb = m.feedback()["id"]
    viewer = m.admin.member(m.project, "viewer")
    read = m.admin.key(m.project, ["read"])
    it = f"{m.base}/roadmap-items/{item['id']}"
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", f"{m.base}/roadmap-items", {"title": "x"}),
        ("PATCH", it, {"status": "shipped"}),
        ("DELETE", it, None),
        ("POST", f"{m.base}/roadmap-items/reorder", {"ids": [item["id"]]}),
        ("POST", f"{it}/feedback", {"feedback_item_id": fb}),
        ("DELETE", f"{it}/feedback/{fb}", None),
        ("DELETE", f"{it}/feedback", {"feedback_item_id": fb}),
    ]
    reads = [f"{m.base}/roadmap-items", it, f"{it}/feedback"]
    for creds in (viewer.h, read["h"]):
        for method, path, body in writes:
            problem(router.request(method, path, headers=creds, json=body), 403)
        for path in reads:
            assert router.get(path, headers=creds).status_code == 200, path
    for method, path, body in writes:
        problem(router.request(method, path, headers=m.ingest["h"], json=body), 403)
    for path in reads:
        problem(router.get(path, headers=m.ingest["h"]), 403)
    problem(router.get("/v1/ingest/roadmap", headers=read["h"]), 403)
    assert m.get(item["id"]) == item

    def pointer(resp: httpx.Response) -> str:
        return str(problem(resp, 422)["errors"][0]["pointer"])

    url = f"{m.base}/roadmap-items"
    assert pointer(router.post(url, headers=m.admin.h, json={})) == "/title"
    assert pointer(router.post(url, headers=m.admin.h, json={"title": "  "})) == "/title"
    assert pointer(router.post(url, headers=m.admin.h, json={"title": "x", "visibility": "secret"})) == "/visibility"
    assert pointer(router.post(url, headers=m.admin.h, json={"title": "x", "status": "under_review"})) == "/status"
    assert pointer(router.post(url, headers=m.admin.h, json={"title": "x", "sort_order": "first"})) == "/sort_order"
    assert pointer(router.post(url, headers=m.admin.h, json={"title": "x", "sort_order": 2**40})) == "/sort_order"
    assert pointer(router.post(url, headers=m.admin.h, json={"title": "x", "eta": "soon"})) == "/eta"
    assert pointer(router.post(url, headers=m.admin.h, json={"title": "x", "eta": "2030-01-01T00:00:00"})) == "/eta"
    assert pointer(router.patch(it, headers=m.admin.h, json={"visibility": None})) == "/visibility"
    problem(router.patch(it, headers=m.admin.h, json={}), 422)
    reorder = f"{url}/reorder"
    assert pointer(router.post(reorder, headers=m.admin.h, json={"ids": []})) == "/ids"
    assert pointer(router.post(reorder, headers=m.admin.h, json={"ids": [item["id"], item["id"]]})) == "/ids/1"
    assert pointer(router.post(reorder, headers=m.admin.h, json={"ids": ["nope"]})) == "/ids/0"
    assert pointer(router.post(f"{it}/feedback", headers=m.admin.h, json={})) == "/feedback_item_id"
    for query in ("limit=0", "cursor=garbage", "status=wont_do", "visibility=hidden"):
        problem(router.get(f"{url}?{query}", headers=m.admin.h), 422)
    for query in ("limit=500", "cursor=garbage", "status=nope"):
        problem(router.get(f"/v1/ingest/roadmap?{query}", headers=m.ingest["h"]), 422)
    assert m.get(item["id"]) == item
