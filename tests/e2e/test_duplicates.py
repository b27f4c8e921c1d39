"""Duplicates through the router: suggestions (`similar`), a person's merge and unmerge, dismissed suggestions.

The session stack's cells run on the machine's Postgres, which has no pgvector: `similar` takes the exact
scan there. tests/e2e/test_similar_index.py runs the same calls on the embedded server, through its HNSW index.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import httpx

from tests.conftest import Admin, problem, sql, until
from tests.e2e.test_notifications import _email_config, _ingest, _integrate, _notify, _settled, inbox  # noqa: F401
from tests.e2e.test_webhook_delivery import wait_for

REGION = "eu-west"
CRASH = {"type": "bug", "content": {"title": "App crashes when I upload a profile photo",
                                    "description": "Choosing a picture for my avatar closes the whole app."}}
CRASH_AGAIN = {"type": "feedback", "content": {"text": "Every time I try to set a new avatar image the application "
                                                       "quits on me."}}
DARK = {"type": "feedback", "content": {"text": "Please add a dark theme for the dashboard, it is too bright at "
                                                "night."}}
INVOICE = {"type": "bug", "content": {"text": "The PDF invoice shows last month's total instead of this month's."}}


def _enriched(router: httpx.Client, admin: Admin, project: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """The interactions once the workers have enriched them."""
    def check() -> dict[str, Any] | None:
        rows = {}
        for i in ids:
            row = router.get(f"/v1/projects/{project['id']}/interactions/{i}", headers=admin.h).json()
            if row.get("ai_method") is None:
                return None
            rows[i] = row
        return rows

    return until(check, 120, "enrichment")


def _similar(router: httpx.Client, h: dict[str, str], project: dict[str, Any], iid: str,
             **params: Any) -> list[dict[str, Any]]:
    r = router.get(f"/v1/projects/{project['id']}/interactions/{iid}/similar", headers=h, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["x-relay-region"] == REGION
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_two_reports_of_one_problem_in_other_words_suggest_each_other(router: httpx.Client, admin: Admin) -> None:
    p = admin.project(REGION)
    key, reader = admin.key(p, ["ingest"]), admin.key(p, ["read"])
    crash, dark, again, invoice = (_ingest(router, key, **body) for body in (CRASH, DARK, CRASH_AGAIN, INVOICE))
    rows = _enriched(router, admin, p, [crash, dark, again, invoice])
    assert rows[crash]["ai_method"] == {"summary": "local-extractive-v1", "labels": "local-rules-v1",
                                        "grouping": rows[crash]["ai_method"]["grouping"]}
    assert rows[crash]["ai_method"]["grouping"].startswith("local-v")
    assert rows[crash]["duplicate_confirmed"] is False

    best = _similar(router, reader["h"], p, crash)
    assert [s["interaction"]["id"] for s in best][:1] == [again], best
    assert {s["interaction"]["id"] for s in best} == {dark, again, invoice}  # every other one, of any type
    scores = [s["score"] for s in best]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > scores[1] + 0.1, best  # clearly ahead of the unrelated ones
    # The suggestion is the interaction as GET returns it.
    one = router.get(f"/v1/projects/{p['id']}/interactions/{again}", headers=reader["h"]).json()
    assert best[0]["interaction"] == one
    assert _similar(router, reader["h"], p, again, limit=1)[0]["interaction"]["id"] == crash

    # Bad input is a problem, another project's interaction is absent.
    problem(router.get(f"/v1/projects/{p['id']}/interactions/{crash}/similar", headers=reader["h"],
                       params={"limit": 0}), 422)
    other = admin.project(REGION)
    problem(router.get(f"/v1/projects/{other['id']}/interactions/{crash}/similar", headers=admin.h), 404)
    problem(router.get(f"/v1/projects/{p['id']}/interactions/{uuid.uuid4()}/similar", headers=admin.h), 404)


def test_a_person_merges_and_unmerges_and_notifications_follow(
        router: httpx.Client, admin: Admin, topo: dict[str, Any], inbox: tuple[Any, int]) -> None:  # noqa: F811
    box, port = inbox
    tag = secrets.token_hex(4)
    db = topo["cells"][REGION]["database_url"]
    p = admin.project(REGION)
    key = admin.key(p, ["ingest"])
    _integrate(router, admin, p, "email", _email_config(port))
    first, second = f"first.{tag}@example.com", f"second.{tag}@example.com"
    crash = _ingest(router, key, **CRASH, user={"external_id": "one", "email": first})
    again = _ingest(router, key, **CRASH_AGAIN, user={"external_id": "two", "email": second})
    _settled(topo, REGION, [crash, again])
    _enriched(router, admin, p, [crash, again])

    # Before anyone confirms, a closed issue tells its own reporter only, whether or not the workers grouped
    # the two on their own.
    _notify(topo, REGION, p, interaction_id=crash, provider="github", external_url=f"https://x.test/{tag}/0")
    wait_for(lambda: box.to(first), 30, "the reporter's email")
    until(lambda: sql(db, "SELECT count(*) = 0 AS done FROM outbox WHERE project_id = $1 AND pending_jobs <> '{}'",
                      uuid.UUID(p["id"]))[0]["done"], 30, "notifications settled")
    assert box.to(second) == []
    viewer = admin.member(p, "viewer")
    problem(router.post(f"/v1/projects/{p['id']}/interactions/{again}/duplicate-of", headers=viewer.h,
                        json={"interaction_id": crash}), 403)
    problem(router.post(f"/v1/projects/{p['id']}/interactions/{again}/duplicate-of", headers=admin.h,
                        json={"interaction_id": again}), 422)
    problem(router.post(f"/v1/projects/{p['id']}/interactions/{again}/duplicate-of", headers=admin.h,
                        json={"interaction_id": str(uuid.uuid4())}), 404)

    # A person merges: both in one group, confirmed; a repeat changes nothing and is audited once.
    agent = admin.member(p, "agent")
    for _ in range(2):
        r = router.post(f"/v1/projects/{p['id']}/interactions/{again}/duplicate-of", headers=agent.h,
                        json={"interaction_id": crash})
        assert r.status_code == 200, r.text
        assert r.json()["duplicate_confirmed"] is True
    group = r.json()["ai_duplicate_group_id"]
    # The group keeps the name of one of the two groups: whichever the workers formed first, when they grouped
    # the pair on their own before the person did (two workers may enrich the pair in either order).
    assert group in (crash, again)
    target = router.get(f"/v1/projects/{p['id']}/interactions/{crash}", headers=admin.h).json()
    assert target["ai_duplicate_group_id"] == group and target["duplicate_confirmed"] is True
    listed = router.get(f"/v1/projects/{p['id']}/interactions", headers=admin.h,
                        params={"duplicate_group": group}).json()["data"]
    assert {i["id"] for i in listed} == {crash, again}
    audit = sql(db, "SELECT action, actor_id FROM audit_logs WHERE project_id = $1 AND action LIKE 'interaction.dup%'",
                uuid.UUID(p["id"]))
    assert [(a["action"], str(a["actor_id"])) for a in audit] == [("interaction.duplicate_merged", agent.user["id"])]

    # The issue closes: both reporters hear once, however many members link to it.
    url = f"https://x.test/{tag}/1"
    _notify(topo, REGION, p, interaction_id=crash, provider="github", external_url=url)
    _notify(topo, REGION, p, interaction_id=again, provider="github", external_url=url)
    wait_for(lambda: len([m for m in box.to(first, second) if url in m["message"].get_content()]) >= 2, 30,
             "both reporters' emails")
    until(lambda: sql(db, "SELECT count(*) = 0 AS done FROM outbox WHERE project_id = $1 AND pending_jobs <> '{}'",
                      uuid.UUID(p["id"]))[0]["done"], 30, "notifications settled")
    told = [m for m in box.to(first, second) if url in m["message"].get_content()]
    assert sorted(m["to"][0] for m in told) == [first, second]

    # Unmerged: a group of its own again, and the next closed issue reaches its own reporter only.
    r = router.delete(f"/v1/projects/{p['id']}/interactions/{again}/duplicate-of", headers=agent.h)
    assert r.status_code == 200, r.text
    assert r.json()["ai_duplicate_group_id"] == again and r.json()["duplicate_confirmed"] is False
    left = router.get(f"/v1/projects/{p['id']}/interactions/{crash}", headers=admin.h).json()
    assert left["ai_duplicate_group_id"] == crash and left["duplicate_confirmed"] is False
    assert router.delete(f"/v1/projects/{p['id']}/interactions/{again}/duplicate-of", headers=agent.h).json()[
        "ai_duplicate_group_id"] == again  # a repeat is no error
    url2 = f"https://x.test/{tag}/2"
    _notify(topo, REGION, p, interaction_id=crash, provider="github", external_url=url2)
    wait_for(lambda: [m for m in box.to(first) if url2 in m["message"].get_content()], 30, "the reporter's email")
    until(lambda: sql(db, "SELECT count(*) = 0 AS done FROM outbox WHERE project_id = $1 AND pending_jobs <> '{}'",
                      uuid.UUID(p["id"]))[0]["done"], 30, "notifications settled")
    assert [m for m in box.to(second) if url2 in m["message"].get_content()] == []
    # An unmerged pair is no longer suggested.
    assert again not in {s["interaction"]["id"] for s in _similar(router, admin.h, p, crash)}


def test_a_dismissed_suggestion_never_merges_on_its_own(router: httpx.Client, admin: Admin) -> None:
    p = admin.project(REGION)
    key = admin.key(p, ["ingest"])
    # Three copies of one report: the workers group the second with the first on their own.
    a = _ingest(router, key, **CRASH)
    _enriched(router, admin, p, [a])
    b = _ingest(router, key, **CRASH)
    rows = _enriched(router, admin, p, [a, b])
    assert rows[b]["ai_duplicate_group_id"] == a and rows[b]["duplicate_confirmed"] is False
    assert 0.9 < rows[b]["ai_confidence"] <= 1.0
    # Grouped pairs are separated with DELETE duplicate-of, not dismissed.
    problem(router.post(f"/v1/projects/{p['id']}/interactions/{a}/similar/{b}/dismiss", headers=admin.h), 409)
    r = router.delete(f"/v1/projects/{p['id']}/interactions/{b}/duplicate-of", headers=admin.h)
    assert r.status_code == 200 and r.json()["ai_duplicate_group_id"] == b, r.text
    # Now they are a dismissed pair: saying it again is a 200, and neither is suggested for the other.
    r = router.post(f"/v1/projects/{p['id']}/interactions/{a}/similar/{b}/dismiss", headers=admin.h)
    assert r.status_code == 200 and r.json() == {"interaction_id": a, "other_id": b, "dismissed": True}, r.text
    assert _similar(router, admin.h, p, a) == [] and _similar(router, admin.h, p, b) == []

    # A third copy is as close to both: the workers must not put the dismissed pair back together through it.
    c = _ingest(router, key, **CRASH)
    rows = _enriched(router, admin, p, [a, b, c])
    assert rows[a]["ai_duplicate_group_id"] != rows[b]["ai_duplicate_group_id"], rows
    assert rows[c]["ai_duplicate_group_id"] == c

    # A dismissed suggestion that was never grouped: 201, then absent from the list.
    d = _ingest(router, key, **CRASH_AGAIN)
    _enriched(router, admin, p, [d])
    assert d in {s["interaction"]["id"] for s in _similar(router, admin.h, p, c)}
    r = router.post(f"/v1/projects/{p['id']}/interactions/{c}/similar/{d}/dismiss", headers=admin.h)
    if r.status_code == 409:  # the workers grouped them: separate first, then the pair is dismissed already
        router.delete(f"/v1/projects/{p['id']}/interactions/{d}/duplicate-of", headers=admin.h)
    else:
        assert r.status_code == 201, r.text
    assert d not in {s["interaction"]["id"] for s in _similar(router, admin.h, p, c)}
    problem(router.post(f"/v1/projects/{p['id']}/interactions/{c}/similar/{c}/dismiss", headers=admin.h), 422)
