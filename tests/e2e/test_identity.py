"""Identity verification through the router: a `user` without a valid `user_hash` cannot rewrite a stored
end user (the impersonation that sent close-the-loop email to whoever typed an address), `required` mode
refuses it on every ingest path, and once a project has an identity secret its emails go only to verified
addresses (read from the `.eml` files `relay dev` writes when no SMTP server is configured)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Any

import httpx

from common.ids import uuid7
from tests import mailbox
from tests.conftest import Admin, problem, sql
from tests.e2e.test_notifications import _notify, _settled
from tests.e2e.test_surveys import _create as create_survey
from tests.e2e.test_webhook_delivery import wait_jobs


def _hash(secret: str, external_id: str) -> str:
    return hmac.new(secret.encode(), external_id.encode(), hashlib.sha256).hexdigest()


def _secret(router: httpx.Client, admin: Admin, project: dict[str, Any]) -> str:
    r = router.post(f"/v1/projects/{project['id']}/identity-secret", headers=admin.h)
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert secret.startswith("ris_") and len(secret) > 40
    return str(secret)


def _report(router: httpx.Client, key: dict[str, Any], user: dict[str, Any], text: str = "broken") -> httpx.Response:
    return router.post("/v1/ingest/interactions", headers=key["h"],
                       json={"type": "bug", "content": {"text": text}, "user": user})


def _end_user(router: httpx.Client, admin: Admin, project: dict[str, Any], external_id: str) -> dict[str, Any]:
    r = router.get(f"/v1/projects/{project['id']}/end-users", headers=admin.h, params={"q": external_id})
    assert r.status_code == 200, r.text
    (user,) = [u for u in r.json()["data"] if u["external_id"] == external_id]
    return dict(user)


def test_unverified_users_never_rewrite_a_stored_identity(router: httpx.Client, admin: Admin,
                                                          topo: dict[str, Any]) -> None:
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    victim = f"alice-{secrets.token_hex(3)}"
    real = {"external_id": victim, "email": "alice@example.com", "name": "Alice", "traits": {"plan": "pro"}}
    assert _report(router, key, real).status_code == 201
    stored = _end_user(router, admin, p, victim)
    assert stored["email"] == "alice@example.com" and stored["verified"] is False

    # Anybody holding the public ingest key, claiming Alice's external id with their own address: not stored.
    forged = {"external_id": victim, "email": "mallory@evil.example", "name": "Mallory", "traits": {"plan": "x"},
              "avatar_url": "https://evil.example/a.png"}
    for path, body in (("/v1/ingest/interactions", {"type": "bug", "content": {"text": "x"}, "user": forged}),
                       ("/v1/ingest/sessions", {"user": forged}),
                       ("/v1/ingest/conversations", {"session_id": str(uuid7()), "body": "hi", "user": forged})):
        r = router.post(path, headers=key["h"], json=body)
        assert r.status_code == 201, (path, r.text)
    after = _end_user(router, admin, p, victim)
    assert (after["email"], after["name"], after["traits"], after["avatar_url"]) == (
        "alice@example.com", "Alice", {"plan": "pro"}, None)

    # With the project's identity secret, a valid hash proves the identity and may change it.
    secret = _secret(router, admin, p)
    r = _report(router, key, {**forged, "user_hash": _hash("ris_not-the-secret", victim)})
    assert r.status_code == 201  # optional mode: kept, unverified, and the stored identity untouched
    assert _end_user(router, admin, p, victim)["email"] == "alice@example.com"
    r = _report(router, key, {"external_id": victim, "email": "alice@new.example", "user_hash": _hash(secret, victim)})
    assert r.status_code == 201, r.text
    proven = _end_user(router, admin, p, victim)
    assert proven["email"] == "alice@new.example" and proven["verified"] is True
    assert proven["name"] == "Alice" and proven["traits"] == {"plan": "pro"}  # not sent: kept
    # An unverified claim neither rewrites nor unmarks a verified user.
    assert _report(router, key, forged).status_code == 201
    again = _end_user(router, admin, p, victim)
    assert again["email"] == "alice@new.example" and again["verified"] is True
    # The secret is sealed at rest, never stored as issued.
    (row,) = sql(topo["cells"]["eu-west"]["database_url"], "SELECT identity_secret FROM projects WHERE id = $1",
                 uuid.UUID(p["id"]))
    assert secret not in row["identity_secret"] and row["identity_secret"].startswith("v")

    # Rotating: the old secret stops proving anybody.
    newer = _secret(router, admin, p)
    assert newer != secret
    assert _report(router, key, {"external_id": victim, "email": "old@example.com",
                                 "user_hash": _hash(secret, victim)}).status_code == 201
    assert _end_user(router, admin, p, victim)["email"] == "alice@new.example"
    # Only admins (or admin keys) make secrets.
    agent = admin.member(p, "agent")
    problem(router.post(f"/v1/projects/{p['id']}/identity-secret", headers=agent.h), 403)
    problem(router.post(f"/v1/projects/{p['id']}/identity-secret", headers=key["h"]), 403)


def test_an_impostor_is_not_emailed_and_only_verified_addresses_are(router: httpx.Client, admin: Admin,
                                                                     topo: dict[str, Any]) -> None:
    region, tag = "us-west", secrets.token_hex(4)
    p = admin.project(region)
    key = admin.key(p, ["ingest"])
    directory = mailbox.directory_of(router)
    secret = _secret(router, admin, p)
    verified, unverified = f"ver.{tag}@example.com", f"unver.{tag}@example.com"
    impostor = f"impostor.{tag}@evil.example"
    # A verified reporter; an impostor later claims them with another address (no hash); and a reporter
    # who was never verified.
    a = _report(router, key, {"external_id": f"v-{tag}", "email": verified, "user_hash": _hash(secret, f"v-{tag}")})
    assert a.status_code == 201, a.text
    b = _report(router, key, {"external_id": f"v-{tag}", "email": impostor})
    c = _report(router, key, {"external_id": f"u-{tag}", "email": unverified})
    assert b.status_code == 201 and c.status_code == 201
    ids = [a.json()["id"], b.json()["id"], c.json()["id"]]
    _settled(topo, region, ids)
    sql(topo["cells"][region]["database_url"],
        "UPDATE interactions SET ai_duplicate_group_id = $1 WHERE id = ANY($2::uuid[])", f"grp-{tag}",
        [uuid.UUID(x) for x in ids])
    job = _notify(topo, region, p, interaction_id=ids[0], provider="github",
                  external_url=f"https://github.com/acme/app/issues/{tag}")
    assert wait_jobs(topo, region, job, ["notifications.issue_closed"]) == {"notifications.issue_closed": "complete"}
    (message,) = mailbox.wait_for(directory, verified)
    assert f"https://github.com/acme/app/issues/{tag}" in message.get_content()
    assert mailbox.messages(directory, impostor) == [] and mailbox.messages(directory, unverified) == []

    # Without an identity secret every address is still told (nobody can be verified there).
    q = admin.project(region)
    qkey = admin.key(q, ["ingest"])
    plain = f"plain.{tag}@example.com"
    d = _report(router, qkey, {"external_id": "p", "email": plain})
    _settled(topo, region, [d.json()["id"]])
    job = _notify(topo, region, q, interaction_id=d.json()["id"], provider="github",
                  external_url=f"https://github.com/acme/app/issues/{tag}-2")
    assert wait_jobs(topo, region, job, ["notifications.issue_closed"]) == {"notifications.issue_closed": "complete"}
    assert len(mailbox.wait_for(directory, plain)) == 1


def test_required_mode_refuses_unverified_users_everywhere(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    key = admin.key(p, ["ingest"])
    settings = f"/v1/projects/{p['id']}/settings"
    assert router.get(settings, headers=admin.h).json()["identity_verification"] == "optional"
    secret = _secret(router, admin, p)
    r = router.patch(settings, headers=admin.h, json={"identity_verification": "required"})
    assert r.status_code == 200 and r.json()["identity_verification"] == "required", r.text
    problem(router.patch(settings, headers=admin.h, json={"identity_verification": "sometimes"}), 422)

    item = router.post(f"/v1/projects/{p['id']}/feedback-items", headers=admin.h, json={"title": "Dark mode"})
    assert item.status_code == 201, item.text
    survey = create_survey(router, admin, p)["id"]
    session = str(uuid7())
    good = {"external_id": "ada", "user_hash": _hash(secret, "ada")}
    for user in ({"external_id": "ada"}, {"external_id": "ada", "user_hash": _hash(secret, "bob")}):
        calls = [("/v1/ingest/interactions", {"type": "bug", "content": {"text": "x"}}),
                 ("/v1/ingest/sessions", {}),
                 (f"/v1/ingest/feedback-items/{item.json()['id']}/votes", {"session_id": session}),
                 ("/v1/ingest/feedback-items", {"title": "Idea", "session_id": session}),
                 (f"/v1/ingest/surveys/{survey}/responses", {"session_id": session, "responses": {"nps": 9,
                                                                                                 "plan": "pro"}}),
                 ("/v1/ingest/conversations", {"session_id": session, "body": "hello"})]
        for path, body in calls:
            detail = problem(router.post(path, headers=key["h"], json={**body, "user": user}), 401)["detail"]
            assert "user_hash" in detail, path
            # The same call with a valid hash, or with no user at all, goes through.
            ok = router.post(path, headers=key["h"], json={**body, "user": good})
            assert ok.status_code in (200, 201), (path, ok.text)
            anonymous = router.post(path, headers=key["h"], json=body)
            assert anonymous.status_code in (200, 201, 409), (path, anonymous.text)
    r = router.get(f"/v1/projects/{p['id']}/end-users", headers=admin.h)
    assert [u["external_id"] for u in r.json()["data"]] == ["ada"] and r.json()["data"][0]["verified"] is True


def test_votes_and_show_once_surveys_count_per_verified_person(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    key = admin.key(p, ["ingest"])
    secret = _secret(router, admin, p)
    item = router.post(f"/v1/projects/{p['id']}/feedback-items", headers=admin.h, json={"title": "Export"}).json()
    votes = f"/v1/ingest/feedback-items/{item['id']}/votes"
    proven = {"external_id": "grace", "user_hash": _hash(secret, "grace")}
    first = router.post(votes, headers=key["h"], json={"session_id": str(uuid7()), "user": proven})
    assert first.status_code == 201 and first.json()["vote_count"] == 1, first.text
    # The same verified person in another session: their vote back, not a second one.
    again = router.post(votes, headers=key["h"], json={"session_id": str(uuid7()), "user": proven})
    assert again.status_code == 200 and again.json()["vote_count"] == 1 and again.json()["id"] == first.json()["id"]
    # A claimed identity nobody proved counts per session: it cannot use up grace's vote, nor vote as one.
    for _ in range(2):
        r = router.post(votes, headers=key["h"], json={"session_id": str(uuid7()), "user": {"external_id": "grace"}})
        assert r.status_code == 201, r.text
    assert r.json()["vote_count"] == 3

    once = create_survey(router, admin, p, targeting={"showOnce": True})["id"]
    responses = f"/v1/ingest/surveys/{once}/responses"
    answer = {"responses": {"nps": 9, "plan": "pro"}}
    assert router.post(responses, headers=key["h"],
                       json={**answer, "session_id": str(uuid7()), "user": proven}).status_code == 201
    later = str(uuid7())
    assert router.post("/v1/ingest/sessions", headers=key["h"], json={"id": later, "user": proven}).status_code == 201
    problem(router.post(responses, headers=key["h"], json={**answer, "session_id": later, "user": proven}), 409)
    shown = router.get("/v1/ingest/surveys", headers=key["h"], params={"session_id": later}).json()["data"]
    assert once not in [s["id"] for s in shown]
    # An unproven claim of the same id answers for its own session only, and does not hide it elsewhere.
    impostor = str(uuid7())
    assert router.post(responses, headers=key["h"], json={**answer, "session_id": impostor,
                                                          "user": {"external_id": "grace"}}).status_code == 201
    problem(router.post(responses, headers=key["h"], json={**answer, "session_id": impostor}), 409)
