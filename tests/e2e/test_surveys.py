"""Surveys end to end through the router: management CRUD, server-side targeting, responses and counters."""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import uuid
from datetime import datetime
from typing import Any

import httpx

from common.ids import uuid7
from tests.conftest import Admin, problem, sql

QUESTIONS = [
    {"id": "nps", "type": "nps", "text": "How likely are you to recommend us?", "required": True},
    {"id": "plan", "type": "single_choice", "text": "Which plan?", "options": ["free", "pro"]},
    {"id": "why", "type": "text", "text": "Why?"},
]


def _definition(title: str = "NPS") -> dict[str, Any]:
    return {"type": "nps", "title": title, "questions": QUESTIONS, "thankYouMessage": "Thanks!"}


def _create(router: httpx.Client, admin: Admin, project: dict[str, Any], **body: Any) -> dict[str, Any]:
    body.setdefault("definition", _definition())
    r = router.post(f"/v1/projects/{project['id']}/surveys", headers=admin.h, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _show(router: httpx.Client, key: dict[str, Any], **params: Any) -> list[str]:
    r = router.get("/v1/ingest/surveys", headers=key["h"], params=params)
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return sorted(s["id"] for s in r.json()["data"])


def _answer(router: httpx.Client, key: dict[str, Any], survey_id: str, session_id: str,
            responses: Any = None, **extra: Any) -> httpx.Response:
    body = {"session_id": session_id, "responses": responses or {"nps": 9, "plan": "pro"}, **extra}
    return router.post(f"/v1/ingest/surveys/{survey_id}/responses", headers=key["h"], json=body)


def _session(dsn: str, project: dict[str, Any], *, seconds_ago: int = 0, user_id: str | None = None) -> str:
    session_id = uuid7()
    sql(dsn, """INSERT INTO sessions (id, project_id, user_id, started_at)
                VALUES ($1, $2, $3, now() - make_interval(secs => $4))""",
        session_id, uuid.UUID(project["id"]), uuid.UUID(user_id) if user_id else None, seconds_ago)
    return str(session_id)


def test_survey_crud_validation_and_audit(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    base = f"/v1/projects/{p['id']}/surveys"
    s = _create(router, admin, p, definition={**_definition("Checkout"), "custom": {"theme": "dark"}},
                targeting={"showOnce": True, "showOnPages": ["/checkout*"], "sampleRate": 0.5})
    assert uuid.UUID(s["id"]).version == 7
    assert s["name"] == "Checkout" and s["active"] is True and s["response_count"] == 0
    assert s["definition"]["custom"] == {"theme": "dark"}  # kept as sent, widget extras included
    assert s["targeting"] == {"showOnce": True, "showOnPages": ["/checkout*"], "sampleRate": 0.5}
    assert router.get(f"{base}/{s['id']}", headers=admin.h).json() == s

    older = [_create(router, admin, p, name=f"s{i}", active=i != 1)["id"] for i in range(3)]
    everything = [s["id"], *older][::-1]
    seen, cursor = [], None
    while True:
        r = router.get(base, headers=admin.h, params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += [x["id"] for x in r.json()["data"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == everything  # newest first, every survey exactly once across pages
    inactive = router.get(base, headers=admin.h, params={"active": "false"}).json()["data"]
    assert [x["id"] for x in inactive] == [older[1]]

    r = router.patch(f"{base}/{s['id']}", headers=admin.h,
                     json={"active": False, "targeting": {"showAfterSeconds": 30}, "name": "Renamed"})
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["active"], changed["name"], changed["targeting"]) == (False, "Renamed", {"showAfterSeconds": 30})
    assert changed["definition"] == s["definition"]
    assert datetime.fromisoformat(changed["updated_at"]) > datetime.fromisoformat(s["updated_at"])
    problem(router.patch(f"{base}/{s['id']}", headers=admin.h, json={}), 422)

    # Definition and targeting are checked, with a pointer to what is wrong.
    bad = [
        ({"definition": {"type": "nps", "questions": []}}, "/definition/questions"),
        ({"definition": {"questions": [{"type": "text", "text": "?"}]}}, "/definition/questions/0/id"),
        ({"definition": {"questions": [QUESTIONS[2], QUESTIONS[2]]}}, "/definition/questions/1/id"),
        ({"definition": {"questions": [{"id": "a", "type": "radio", "text": "?", "options": []}]}},
         "/definition/questions/0/options"),
        ({"definition": {"questions": [{"id": "a", "text": "?"}]}}, "/definition/questions/0/type"),
        ({"definition": _definition(), "targeting": {"showAfterSeconds": "soon"}}, "/targeting/showAfterSeconds"),
        ({"definition": _definition(), "targeting": {"showOnce": "yes"}}, "/targeting/showOnce"),
        ({"definition": _definition(), "targeting": {"showOnPages": "/home"}}, "/targeting/showOnPages"),
        ({"name": "x" * 201, "definition": _definition()}, "/name"),
        ({}, "/definition"),
    ]
    for body, pointer in bad:
        err = problem(router.post(base, headers=admin.h, json=body), 422)
        assert err["errors"][0]["pointer"] == pointer, (body, err)
    err = problem(router.patch(f"{base}/{s['id']}", headers=admin.h, json={"definition": {"questions": "?"}}), 422)
    assert err["errors"][0]["pointer"] == "/definition/questions"

    assert router.delete(f"{base}/{s['id']}", headers=admin.h).status_code == 204
    problem(router.get(f"{base}/{s['id']}", headers=admin.h), 404)
    problem(router.delete(f"{base}/{s['id']}", headers=admin.h), 404)

    dsn = topo["cells"]["us-west"]["database_url"]
    audited = sql(dsn, """SELECT action, actor_type::text, actor_id, meta FROM audit_logs
                           WHERE project_id = $1 AND target_id = $2 ORDER BY created_at""",
                  uuid.UUID(p["id"]), s["id"])
    assert [(a["action"], a["actor_type"], a["actor_id"]) for a in audited] == [
        ("survey.created", "admin", admin.user["id"]), ("survey.updated", "admin", admin.user["id"]),
        ("survey.deleted", "admin", admin.user["id"])]
    assert json.loads(audited[1]["meta"]) == {"fields": ["active", "name", "targeting"]}


def test_targeting_is_evaluated_on_the_server(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("eu-west")
    dsn = topo["cells"]["eu-west"]["database_url"]
    key = admin.key(p, ["ingest"])
    always = _create(router, admin, p, name="always")["id"]
    pages = _create(router, admin, p, name="pages", targeting={
        "showOnPages": ["/pricing*", "https://app.example.com/settings/*"]})["id"]
    late = _create(router, admin, p, name="late", targeting={"showAfterSeconds": 60})["id"]
    once = _create(router, admin, p, name="once", targeting={"showOnce": True})["id"]
    off = _create(router, admin, p, name="off", active=False)["id"]
    unknown = str(uuid7())

    # Pages: a pattern matches the whole URL or its path; `*` spans anything.
    assert _show(router, key, url="https://shop.test/pricing/teams?x=1", session_id=unknown) == sorted(
        [always, pages, once])
    assert _show(router, key, url="/pricing", session_id=unknown) == sorted([always, pages, once])
    assert _show(router, key, url="https://app.example.com/settings/profile") == sorted([always, pages, once])
    assert _show(router, key, url="https://elsewhere.test/settings/profile") == sorted([always, once])
    assert _show(router, key, url="https://shop.test/home/pricing") == sorted([always, once])
    assert _show(router, key) == sorted([always, once])  # no URL: page-targeted surveys wait

    # Delay: counted from the session's start; an unknown session has just started.
    old = _session(dsn, p, seconds_ago=120)
    recent = _session(dsn, p, seconds_ago=10)
    assert _show(router, key, url="/home", session_id=old) == sorted([always, late, once])
    assert _show(router, key, url="/home", session_id=recent) == sorted([always, once])
    assert _show(router, key, url="/home", session_id=unknown) == sorted([always, once])
    # And when to ask again (an extension of the contract's page): once the delayed survey becomes due.
    def again(**params: Any) -> Any:
        return router.get("/v1/ingest/surveys", headers=key["h"], params=params).json()["check_again_in"]
    assert 48 <= again(url="/home", session_id=recent) <= 50
    assert again(url="/home", session_id=unknown) == 60
    assert again(url="/home", session_id=old) is None  # nothing left to wait for

    # Once per session and per person, across their sessions.
    ext = f"u-{secrets.token_hex(4)}"
    first = _session(dsn, p)
    r = _answer(router, key, once, first, user={"external_id": ext})
    assert r.status_code == 201, r.text
    user_id = r.json()["user_id"]
    assert user_id is not None
    assert _show(router, key, url="/home", session_id=first) == [always]
    same_person = _session(dsn, p, user_id=user_id, seconds_ago=300)
    assert _show(router, key, url="/home", session_id=same_person) == sorted([always, late])
    stranger = _session(dsn, p)
    assert _show(router, key, url="/home", session_id=stranger) == sorted([always, once])
    # Answering again is refused in the same session, and by the same person in another session.
    problem(_answer(router, key, once, first), 409)
    problem(_answer(router, key, once, same_person), 409)
    problem(_answer(router, key, once, stranger, user={"external_id": ext}), 409)
    # Surveys that are not show-once can be answered again.
    assert _answer(router, key, always, first).status_code == 201
    assert _answer(router, key, always, first).status_code == 201
    assert router.get(f"/v1/projects/{p['id']}/surveys/{always}", headers=admin.h).json()["response_count"] == 2

    # Inactive surveys are never shown and take no answers; reactivated, they are back.
    problem(_answer(router, key, off, stranger), 409)
    assert off not in _show(router, key, url="/pricing", session_id=old)
    router.patch(f"/v1/projects/{p['id']}/surveys/{off}", headers=admin.h, json={"active": True})
    assert off in _show(router, key, url="/pricing", session_id=old)
    assert router.get(f"/v1/projects/{p['id']}/surveys/{once}", headers=admin.h).json()["response_count"] == 1


def test_responses_are_survey_interactions(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    dsn = topo["cells"]["us-west"]["database_url"]
    key = admin.key(p, ["ingest"])
    survey = _create(router, admin, p)["id"]
    session = str(uuid7())  # never registered: the response creates it
    rid = str(uuid7())
    r = _answer(router, key, survey, session, {"nps": 10, "plan": "pro", "why": "fast"}, id=rid,
                user={"external_id": "ada"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == rid and body["survey_id"] == survey and body["session_id"] == session
    assert body["responses"] == {"nps": 10, "plan": "pro", "why": "fast"}

    interaction = router.get(f"/v1/projects/{p['id']}/interactions/{body['interaction_id']}", headers=admin.h).json()
    assert interaction["type"] == "survey" and interaction["user_id"] == body["user_id"]
    assert interaction["session_id"] == session
    assert interaction["content"]["survey_id"] == survey and interaction["content"]["responses"] == body["responses"]
    assert interaction["content"]["text"] == (
        "How likely are you to recommend us?: 10\nWhich plan?: pro\nWhy?: fast")
    found = router.get(f"/v1/projects/{p['id']}/interactions", headers=admin.h,
                       params={"type": "survey", "q": "fast"}).json()["data"]
    assert [i["id"] for i in found] == [body["interaction_id"]]
    assert sql(dsn, "SELECT interaction_count FROM sessions WHERE id = $1", uuid.UUID(session))[0][0] == 1

    # A retry with the same id returns the stored response and writes nothing.
    again = _answer(router, key, survey, session, {"nps": 1}, id=rid)
    assert again.status_code == 200 and again.json() == body
    # The list form of answers is accepted too.
    listed = _answer(router, key, survey, session, [{"question_id": "nps", "value": 3}, {"question_id": "why"}])
    assert listed.status_code == 201 and listed.json()["responses"] == {"nps": 3}

    responses = router.get(f"/v1/projects/{p['id']}/surveys/{survey}/responses", headers=admin.h).json()
    assert [x["id"] for x in responses["data"]] == [listed.json()["id"], rid]
    assert responses["data"][1] == body
    page = router.get(f"/v1/projects/{p['id']}/surveys/{survey}/responses", headers=admin.h,
                      params={"limit": 1}).json()
    rest = router.get(f"/v1/projects/{p['id']}/surveys/{survey}/responses", headers=admin.h,
                      params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [x["id"] for x in page["data"] + rest["data"]] == [listed.json()["id"], rid]
    assert rest["next_cursor"] is None
    assert router.get(f"/v1/projects/{p['id']}/surveys/{survey}", headers=admin.h).json()["response_count"] == 2
    assert sql(dsn, "SELECT count(*) FROM interactions WHERE project_id = $1 AND type = 'survey'",
               uuid.UUID(p["id"]))[0][0] == 2

    # Answers are checked against the survey's questions, each error pointing at its answer.
    cases = [
        ({"nps": 9, "colour": "red"}, "/responses/colour"),
        ({"nps": 11}, "/responses/nps"),
        ({"nps": "ten"}, "/responses/nps"),
        ({"nps": 5, "plan": "enterprise"}, "/responses/plan"),
        ({"nps": 5, "plan": ["free", "pro"]}, "/responses/plan"),
        ({"nps": 5, "why": 42}, "/responses/why"),
        ({"plan": "free"}, "/responses/nps"),  # required
        ([{"question_id": "nps", "value": 99}], "/responses/0"),
    ]
    for answers, pointer in cases:
        err = problem(_answer(router, key, survey, session, answers), 422)
        assert pointer in [e["pointer"] for e in err["errors"]], (answers, err)
    optional = _create(router, admin, p, definition={"questions": QUESTIONS[1:]})["id"]
    err = problem(router.post(f"/v1/ingest/surveys/{optional}/responses", headers=key["h"],
                              json={"session_id": session, "responses": {"plan": None}}), 422)
    assert [e["pointer"] for e in err["errors"]] == ["/responses"]
    err = problem(router.post(f"/v1/ingest/surveys/{survey}/responses", headers=key["h"],
                              json={"responses": {"nps": 1}}), 422)
    assert err["errors"][0]["pointer"] == "/session_id"
    problem(_answer(router, key, str(uuid7()), session), 404)
    assert router.get(f"/v1/projects/{p['id']}/surveys/{survey}", headers=admin.h).json()["response_count"] == 2


def test_concurrent_responses_are_counted_exactly(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("eu-west")
    dsn = topo["cells"]["eu-west"]["database_url"]
    key = admin.key(p, ["ingest"])
    survey = _create(router, admin, p)["id"]
    once = _create(router, admin, p, targeting={"showOnce": True})["id"]
    n = 24
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(lambda _: _answer(router, key, survey, str(uuid7())).status_code, range(n)))
        assert codes == [201] * n
        # Concurrent retries of one response: one stored, every retry answered with it.
        rid = str(uuid7())
        session = str(uuid7())
        retries = list(pool.map(lambda _: _answer(router, key, survey, session, id=rid), range(10)))
        assert sorted(r.status_code for r in retries) == [200] * 9 + [201], [r.text for r in retries]
        assert len({r.json()["interaction_id"] for r in retries}) == 1
        # A show-once survey answered concurrently from one session: exactly one gets in.
        shared = str(uuid7())
        once_codes = sorted(pool.map(lambda _: _answer(router, key, once, shared).status_code, range(10)))
        assert once_codes == [201] + [409] * 9
    got = router.get(f"/v1/projects/{p['id']}/surveys/{survey}", headers=admin.h).json()
    assert got["response_count"] == n + 1
    assert sql(dsn, "SELECT count(*) FROM survey_responses WHERE survey_id = $1", uuid.UUID(survey))[0][0] == n + 1
    assert sql(dsn, """SELECT count(*) FROM interactions WHERE project_id = $1 AND type = 'survey'""",
               uuid.UUID(p["id"]))[0][0] == n + 2
    assert router.get(f"/v1/projects/{p['id']}/surveys/{once}", headers=admin.h).json()["response_count"] == 1


def test_survey_tenancy_roles_and_scopes(router: httpx.Client, admin: Admin) -> None:
    a = admin.project("us-west")
    other = Admin(router)
    b = other.project("us-west")
    b_survey = _create(router, other, b)["id"]
    a_survey = _create(router, admin, a)["id"]
    b_ingest = other.key(b, ["ingest"])
    a_ingest = admin.key(a, ["ingest"])
    a_admin_key = admin.key(a, ["admin"])
    # Project A's credentials (session or key) never reach project B's survey: 404, never which.
    for h in (admin.h, a_admin_key["h"]):
        for method, path, body in [
            ("GET", f"/v1/projects/{a['id']}/surveys/{b_survey}", None),
            ("PATCH", f"/v1/projects/{a['id']}/surveys/{b_survey}", {"active": False}),
            ("DELETE", f"/v1/projects/{a['id']}/surveys/{b_survey}", None),
            ("GET", f"/v1/projects/{a['id']}/surveys/{b_survey}/responses", None),
            ("GET", f"/v1/projects/{b['id']}/surveys", None),
            ("POST", f"/v1/projects/{b['id']}/surveys", {"definition": _definition()}),
            ("GET", f"/v1/projects/{b['id']}/surveys/{b_survey}", None),
            ("PATCH", f"/v1/projects/{b['id']}/surveys/{b_survey}", {"active": False}),
            ("DELETE", f"/v1/projects/{b['id']}/surveys/{b_survey}", None),
            ("GET", f"/v1/projects/{b['id']}/surveys/{b_survey}/responses", None),
        ]:
            problem(router.request(method, path, headers=h, json=body), 404)
    assert [s["id"] for s in router.get(f"/v1/projects/{a['id']}/surveys", headers=admin.h).json()["data"]] == [
        a_survey]
    # Ingest: another project's survey is absent, and it is not shown.
    problem(_answer(router, a_ingest, b_survey, str(uuid7())), 404)
    assert _show(router, a_ingest) == [a_survey]
    assert _show(router, b_ingest) == [b_survey]
    got = router.get(f"/v1/projects/{b['id']}/surveys/{b_survey}", headers=other.h).json()
    assert got["active"] is True and got["response_count"] == 0

    # Viewers and read keys read but do not write; ingest keys cannot manage at all.
    viewer = admin.member(a, "viewer")
    read_key = admin.key(a, ["read"])
    for h in (viewer.h, read_key["h"]):
        assert router.get(f"/v1/projects/{a['id']}/surveys", headers=h).status_code == 200
        assert router.get(f"/v1/projects/{a['id']}/surveys/{a_survey}/responses", headers=h).status_code == 200
        problem(router.post(f"/v1/projects/{a['id']}/surveys", headers=h, json={"definition": _definition()}), 403)
        problem(router.patch(f"/v1/projects/{a['id']}/surveys/{a_survey}", headers=h, json={"active": False}), 403)
        problem(router.delete(f"/v1/projects/{a['id']}/surveys/{a_survey}", headers=h), 403)
    for method, path in [("GET", "surveys"), ("POST", "surveys"), ("GET", f"surveys/{a_survey}"),
                         ("PATCH", f"surveys/{a_survey}"), ("DELETE", f"surveys/{a_survey}"),
                         ("GET", f"surveys/{a_survey}/responses")]:
        body = {"definition": _definition()} if method == "POST" else {"active": False} if method == "PATCH" else None
        problem(router.request(method, f"/v1/projects/{a['id']}/{path}", headers=a_ingest["h"], json=body), 403)
    # ... and management credentials cannot ingest.
    problem(_answer(router, read_key, a_survey, str(uuid7())), 403)
    problem(router.get("/v1/ingest/surveys", headers=a_admin_key["h"]), 403)
    write_key = admin.key(a, ["write"])
    r = router.patch(f"/v1/projects/{a['id']}/surveys/{a_survey}", headers=write_key["h"], json={"name": "by key"})
    assert r.status_code == 200 and r.json()["name"] == "by key"


def test_answers_are_scrubbed(router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    dsn = topo["cells"]["us-west"]["database_url"]
    sql(dsn, """INSERT INTO privacy_rules (id, project_id, name, rule)
                VALUES ($1, $2, 'cards', '{"type": "pattern", "pattern": "card", "scope": ["content"]}')""",
        uuid7(), uuid.UUID(p["id"]))
    key = admin.key(p, ["ingest"])
    survey = _create(router, admin, p)["id"]
    r = _answer(router, key, survey, str(uuid7()), {"nps": 2, "why": "you charged 4111 1111 1111 1111 twice"})
    assert r.status_code == 201, r.text
    # Redacted by a card rule: the project's default one, or this test's if there is no default.
    why = r.json()["responses"]["why"]
    assert why.startswith("you charged [redacted:card") and "4111" not in why
    row = sql(dsn, "SELECT content_text, content_json::text, privacy_scope::text FROM interactions WHERE id = $1",
              uuid.UUID(r.json()["interaction_id"]))[0]
    assert "4111" not in row[0] and "4111" not in row[1]
    assert json.loads(row[2])["total"] == 1
    assert not sql(dsn, "SELECT 1 FROM survey_responses WHERE project_id = $1 AND responses::text LIKE '%4111%'",
                   uuid.UUID(p["id"]))
