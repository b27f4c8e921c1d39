"""Feedback items follow confirmed duplicate groups, through the router: a person's merge moves
`linked_interaction_count` and the group's reporters (as votes) with the group, an unmerge takes them back,
an end user counts once, and the counters stay exact under concurrent merges, unmerges, links and votes.

Every scenario also checks the stored counters against a recount from the raw rows made here, in Python,
from the definition in cell/feedback/demand.py (not with the cell's SQL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import uuid
from typing import Any

import httpx

from cell.maintenance.counters import reconcile
from common.ids import uuid7
from common.pg import create_pool
from tests.conftest import Admin, problem, sql
from tests.e2e.test_duplicates import CRASH, CRASH_AGAIN, REGION, _enriched
from tests.e2e.test_feedback import Board


class Group(Board):
    """A board whose interactions come from named end users, with merge, unmerge, link and vote helpers."""

    def __init__(self, router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
        super().__init__(router, REGION, admin)
        self.dsn = str(topo["cells"][REGION]["database_url"])
        self.users: dict[str, str] = {}

    def report(self, who: str | None, body: dict[str, Any]) -> str:
        """An interaction reported by end user `who` (None: anonymous); remembers who's end-user id."""
        payload = {**body, **({"user": {"external_id": who}} if who else {})}
        r = self.router.post("/v1/ingest/interactions", headers=self.ingest["h"], json=payload)
        assert r.status_code == 201, r.text
        iid = str(r.json()["id"])
        if who:
            row = self.router.get(f"{self.base}/interactions/{iid}", headers=self.admin.h).json()
            self.users[who] = row["user_id"]
        return iid

    def merge(self, iid: str, other: str, h: dict[str, str] | None = None) -> httpx.Response:
        return self.router.post(f"{self.base}/interactions/{iid}/duplicate-of", headers=h or self.admin.h,
                                json={"interaction_id": other})

    def unmerge(self, iid: str) -> httpx.Response:
        return self.router.delete(f"{self.base}/interactions/{iid}/duplicate-of", headers=self.admin.h)

    def link(self, item: str, iid: str) -> httpx.Response:
        return self.router.post(f"{self.base}/feedback-items/{item}/links", headers=self.admin.h,
                                json={"interaction_id": iid})

    def unlink(self, item: str, iid: str) -> httpx.Response:
        return self.router.delete(f"{self.base}/feedback-items/{item}/links/{iid}", headers=self.admin.h)

    def cast(self, item: str, session: str, who: str) -> httpx.Response:
        return self.vote(item, session, user={"external_id": who})

    def withdraw(self, item: str, session: str) -> httpx.Response:
        return self.router.delete(f"/v1/ingest/feedback-items/{item}/votes", headers=self.ingest["h"],
                                  params={"session_id": session})

    def counts(self, item: str) -> tuple[int, int]:
        """(linked_interaction_count, vote_count) as the API shows them."""
        got = self.get(item)
        return got["linked_interaction_count"], got["vote_count"]

    def voters(self, item: str) -> list[tuple[str | None, str | None]]:
        """(user id, session id) of every vote the API lists for the item, sorted."""
        r = self.router.get(f"{self.base}/feedback-items/{item}/votes", headers=self.admin.h)
        assert r.status_code == 200, r.text
        return sorted(((v["user_id"], v["session_id"]) for v in r.json()["data"]), key=str)

    def recount(self) -> None:
        """Every item's stored counters and group votes equal what the raw rows justify (recomputed here)."""
        pid = uuid.UUID(self.id)
        members = {r["id"]: r for r in sql(self.dsn, """SELECT id, user_id, ai_duplicate_group_id AS g,
                                                               duplicate_confirmed AS c
                                                          FROM interactions WHERE project_id = $1""", pid)}
        links: dict[uuid.UUID, set[uuid.UUID]] = {}
        for r in sql(self.dsn, "SELECT feedback_item_id, interaction_id FROM feedback_links WHERE project_id = $1",
                     pid):
            links.setdefault(r["feedback_item_id"], set()).add(r["interaction_id"])
        votes = sql(self.dsn, "SELECT feedback_item_id, user_id, session_id, from_group FROM feedback_votes "
                              "WHERE project_id = $1", pid)
        for item in sql(self.dsn, "SELECT id, vote_count, linked_interaction_count FROM feedback_items "
                                  "WHERE project_id = $1", pid):
            linked = links.get(item["id"], set())
            reached = set(linked)
            for i in linked:
                if members[i]["c"]:
                    reached |= {m for m, row in members.items() if row["c"] and row["g"] == members[i]["g"]}
            own = [v for v in votes if v["feedback_item_id"] == item["id"] and not v["from_group"]]
            group = [v for v in votes if v["feedback_item_id"] == item["id"] and v["from_group"]]
            wanted = {members[i]["user_id"] for i in reached if members[i]["c"] and members[i]["user_id"]}
            wanted -= {v["user_id"] for v in own}
            assert item["linked_interaction_count"] == len(reached), (item, reached)
            assert sorted(v["user_id"] for v in group) == sorted(wanted), (item, group, wanted)
            assert all(v["session_id"] is None for v in group)
            assert item["vote_count"] == len(own) + len(group), item


def _reconcile(dsn: str, project_id: str) -> dict[str, int]:
    """The counters' reconciliation job on one project, as the worker runs it: what it repaired."""
    async def run() -> dict[str, int]:
        pool = await create_pool(dsn, 2)
        try:
            return await reconcile(pool, uuid.UUID(project_id))
        finally:
            await pool.close()

    return asyncio.run(run())


def test_a_merge_moves_links_and_reporters_with_the_group_and_an_unmerge_takes_them_back(
        router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    g = Group(router, admin, topo)
    a = g.report("alice", CRASH)
    b = g.report("bob", CRASH_AGAIN)
    c = g.report("carol", CRASH_AGAIN)
    anon = g.report(None, CRASH)
    _enriched(router, g.admin, g.project, [a, b, c, anon])  # a worker writes its group once; people decide after
    f, h = g.item(title="Avatar upload crashes")["id"], g.item(title="Crash on profile photo")["id"]
    assert g.link(f, a).json()["linked_interaction_count"] == 1
    assert g.link(h, b).json()["linked_interaction_count"] == 1
    bob_session = str(uuid7())
    assert g.cast(f, bob_session, "bob").json()["vote_count"] == 1
    # Linking a report nobody confirmed as a duplicate counts the link only, as before.
    assert (g.counts(f), g.counts(h)) == ((1, 1), (1, 0))
    g.recount()

    # Bob's report is confirmed a duplicate of Alice's: each item reaches both, and the group's reporters
    # count once each on both items (Bob's own vote on F stands for him there).
    for _ in range(2):
        r = g.merge(b, a)
        assert r.status_code == 200 and r.json()["duplicate_confirmed"] is True, r.text
    assert (g.counts(f), g.counts(h)) == ((2, 2), (2, 2))
    alice, bob, carol = g.users["alice"], g.users["bob"], g.users["carol"]
    assert g.voters(f) == sorted([(alice, None), (bob, bob_session)], key=str)
    assert g.voters(h) == sorted([(alice, None), (bob, None)], key=str)
    g.recount()
    audit = sql(g.dsn, """SELECT action, meta FROM audit_logs WHERE project_id = $1
                           AND action LIKE 'interaction.duplicate%' ORDER BY created_at""", uuid.UUID(g.id))
    assert [x["action"] for x in audit] == ["interaction.duplicate_merged"]  # the repeat changed nothing
    meta = audit[0]["meta"]
    moved = {m["feedback_item_id"]: m for m in (json.loads(meta) if isinstance(meta, str) else meta)["feedback_items"]}
    assert moved == {f: {"feedback_item_id": f, "linked_interaction_count": 2, "vote_count": 2, "votes_added": 1,
                         "votes_removed": 0},
                     h: {"feedback_item_id": h, "linked_interaction_count": 2, "vote_count": 2, "votes_added": 2,
                         "votes_removed": 0}}
    # The public board shows the demand; a group vote is nobody's session, so no session reads as voted.
    board = router.get("/v1/ingest/feedback-items", headers=g.ingest["h"], params={"session_id": str(uuid7())})
    assert {i["id"]: (i["vote_count"], i["voted"]) for i in board.json()["data"]} == {f: (2, False), h: (2, False)}

    # Bob votes for H himself: his own vote replaces his group vote (201, the count stays); withdrawn, the
    # group vote comes back. Withdrawing it again changes nothing.
    other_session = str(uuid7())
    r = g.cast(h, other_session, "bob")
    assert r.status_code == 201 and r.json()["vote_count"] == 2, r.text
    assert g.voters(h) == sorted([(alice, None), (bob, other_session)], key=str)
    for _ in range(2):
        r = g.withdraw(h, other_session)
        assert r.status_code == 200 and r.json()["vote_count"] == 2, r.text
    assert g.voters(h) == sorted([(alice, None), (bob, None)], key=str)
    g.recount()

    # Carol's report joins the group; linked to F directly as well, it is still one interaction there. An
    # anonymous report in the group adds an interaction and no vote.
    assert g.merge(c, b).status_code == 200
    assert g.link(f, c).json()["linked_interaction_count"] == 3
    assert g.merge(anon, a).status_code == 200
    assert (g.counts(f), g.counts(h)) == ((4, 3), (4, 3))
    g.recount()

    # Unmerged one by one, the items end where they began (F keeps its direct link to Carol's report).
    assert g.unmerge(anon).status_code == 200
    assert (g.counts(f), g.counts(h)) == ((3, 3), (3, 3))
    assert g.unmerge(b).status_code == 200  # Bob's report leaves: H reaches it alone, F keeps Alice and Carol
    assert (g.counts(f), g.counts(h)) == ((2, 3), (1, 0))
    assert g.voters(f) == sorted([(alice, None), (bob, bob_session), (carol, None)], key=str)
    g.recount()
    assert g.unmerge(c).status_code == 200  # Alice's report is alone: nobody's group is confirmed any more
    assert (g.counts(f), g.counts(h)) == ((2, 1), (1, 0))
    assert g.voters(f) == [(bob, bob_session)] and g.voters(h) == []
    g.recount()

    # Merged again: the same counts as the first time, whichever side asks.
    assert g.merge(a, b).status_code == 200
    assert (g.counts(f), g.counts(h)) == ((3, 2), (2, 2))
    # An unlink takes the group's reach away with the link; linked again, it is back.
    assert g.unlink(h, b).status_code == 204
    assert g.counts(h) == (0, 0)
    assert g.link(h, a).json()["linked_interaction_count"] == 2
    assert g.counts(h) == (2, 2)
    g.recount()

    # The counters' safety net recounts toward the same definition: nothing to repair, and a drifted count
    # comes back to what the group reaches (not to the number of direct links).
    assert _reconcile(g.dsn, g.id) == {}
    sql(g.dsn, "UPDATE feedback_items SET linked_interaction_count = 1 WHERE id = $1", uuid.UUID(f))
    assert _reconcile(g.dsn, g.id) == {"feedback_items.linked_interaction_count": 1}
    assert g.counts(f) == (3, 2)

    # A viewer cannot move anything.
    viewer = g.admin.member(g.project, "viewer")
    problem(g.merge(c, a, viewer.h), 403)
    assert (g.counts(f), g.counts(h)) == ((3, 2), (2, 2))


def test_erasing_a_reporter_takes_their_reports_and_demand_out_of_the_group(
        router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    g = Group(router, admin, topo)
    a, b = g.report("alice", CRASH), g.report("bob", CRASH_AGAIN)
    _enriched(router, g.admin, g.project, [a, b])
    f, h = g.item()["id"], g.item()["id"]
    g.link(f, a)
    g.link(h, b)
    assert g.merge(b, a).status_code == 200
    assert (g.counts(f), g.counts(h)) == ((2, 2), (2, 2))
    r = router.delete(f"{g.base}/end-users/{g.users['alice']}", headers=g.admin.h)
    assert r.status_code == 204, r.text
    # Alice's report, link and demand are gone; Bob's report is alone, so no longer a confirmed duplicate.
    assert (g.counts(f), g.counts(h)) == ((0, 0), (1, 0))
    left = router.get(f"{g.base}/interactions/{b}", headers=g.admin.h).json()
    assert left["duplicate_confirmed"] is False
    g.recount()


def test_counts_stay_exact_under_concurrent_merges_unmerges_links_and_votes(
        router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    g = Group(router, admin, topo)
    people = [f"p{n}" for n in range(6)]
    reports = [g.report(who, CRASH if n % 2 else CRASH_AGAIN) for n, who in enumerate(people)]
    _enriched(router, g.admin, g.project, reports)
    items = [g.item()["id"] for _ in range(3)]
    for n, iid in enumerate(reports):
        g.link(items[n % 3], iid)
    sessions = {who: str(uuid7()) for who in people}
    rng = random.Random(15)
    plan = [(n % 5, rng.choice(reports), rng.choice(reports), rng.choice(items), rng.choice(people))
            for n in range(160)]

    def step(move: tuple[int, str, str, str, str]) -> int:
        kind, one, other, item, who = move
        if kind == 0:
            return g.merge(one, other).status_code
        if kind == 1:
            return g.unmerge(one).status_code
        if kind == 2:
            return (g.link(item, one) if other < one else g.unlink(item, one)).status_code
        return (g.cast(item, sessions[who], who) if kind == 3 else g.withdraw(item, sessions[who])).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(step, plan))
    # 422: a merge of an interaction with itself; 404: an unlink of a link that is not there; 409: a vote
    # whose session's vote was withdrawn at that moment (the client retries).
    assert set(codes) <= {200, 201, 204, 404, 409, 422}, codes
    assert codes.count(200) > 40, codes
    g.recount()
    # And it ends consistent whatever happened: unmerge everything, and only the links and own votes remain.
    for iid in reports:
        assert g.unmerge(iid).status_code == 200
    assert sql(g.dsn, "SELECT count(*) AS n FROM feedback_votes WHERE project_id = $1 AND from_group",
               uuid.UUID(g.id))[0]["n"] == 0
    g.recount()


def test_a_report_left_as_its_groups_only_confirmed_member_brings_no_demand(
        router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    g = Group(router, admin, topo)
    a = g.report("alice", CRASH)
    _enriched(router, g.admin, g.project, [a])
    copy = g.report("dana", CRASH)  # the same words: the workers put it in Alice's group on their own
    b = g.report("bob", CRASH_AGAIN)
    rows = _enriched(router, g.admin, g.project, [a, copy, b])
    assert rows[copy]["ai_duplicate_group_id"] == a and rows[copy]["duplicate_confirmed"] is False
    f = g.item()["id"]
    g.link(f, a)
    assert g.merge(b, a).status_code == 200
    # The workers' guess reaches nothing and counts nobody; the person's merge reaches Bob's report.
    assert g.counts(f) == (2, 2)
    g.recount()
    # Bob's report leaves: Alice's is still grouped with the workers' copy, but no longer confirmed.
    assert g.unmerge(b).status_code == 200
    assert router.get(f"{g.base}/interactions/{a}", headers=g.admin.h).json()["duplicate_confirmed"] is False
    assert g.counts(f) == (1, 0)
    g.recount()
