"""A dashboard account's own life through the router: password change and reset, profile, sessions, deletion,
and the audit trail every router write leaves (ids only: no email address, name or secret in it)."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import httpx

from common.keys import fingerprint
from relay.devstack import DevStack
from tests import mailbox
from tests.conftest import Admin, problem, sql, until
from tests.e2e.test_project_lifecycle import _rows_naming

PASSWORD = "correct horse battery staple"


def _reset_token(stack: DevStack, email: str, after: set[str] | None = None) -> str:
    """The token of the newest reset link mailed to the account (`relay dev` writes mail to DIR/mail/)."""

    def find() -> str | None:
        found = [t for m in mailbox.messages(stack.state_dir / "mail", email)
                 for t in re.findall(r"reset-password\?token=([A-Za-z0-9_-]+)", m.get_content())]
        fresh = [t for t in found if t not in (after or set())]
        return fresh[-1] if fresh else None

    return until(find, 10, "a reset link was sent")


def _login(router: httpx.Client, email: str, password: str) -> httpx.Response:
    return router.post("/v1/auth/login", json={"email": email, "password": password})


def test_a_reset_link_works_once_and_expires(router: httpx.Client, stack: DevStack, topo: dict[str, Any]) -> None:
    user = Admin(router)
    other_session = _login(router, user.email, PASSWORD).json()["token"]
    unknown = router.post("/v1/auth/password-reset", json={"email": f"nobody-{secrets.token_hex(4)}@example.com"})
    r = router.post("/v1/auth/password-reset", json={"email": user.email.upper()})
    assert r.status_code == 202 and unknown.status_code == 202 and r.json() == unknown.json(), (r.text, unknown.text)
    token = _reset_token(stack, user.email)
    # `relay dev` says in its log where the email is (the file's name, not the link).
    [holding] = [p.name for p in (stack.state_dir / "mail").glob("*.eml") if token in p.read_text()]
    assert stack.log_dir is not None
    router_log = stack.log_dir / "router.log"
    until(lambda: holding in router_log.read_text(), 10, "the router's log names the email")
    control = topo["router"]["database_url"]
    stored = sql(control, "SELECT token_hash, expires_at - created_at AS ttl FROM password_resets"
                          " WHERE user_id = $1::uuid", user.user["id"])
    assert [row["token_hash"] for row in stored] == [fingerprint(token)]  # only its hash is kept
    assert round(stored[0]["ttl"].total_seconds()) == r.json()["expires_in_seconds"] == 3600

    r = router.post("/v1/auth/password-reset/complete", json={"token": token, "new_password": "a brand new secret"})
    assert r.status_code == 200 and r.json()["user"]["id"] == user.user["id"], r.text
    fresh = {"Authorization": f"Bearer {r.json()['token']}"}
    assert router.get("/v1/auth/me", headers=fresh).status_code == 200
    problem(router.get("/v1/auth/me", headers=user.h), 401)  # every earlier session ended
    problem(router.get("/v1/auth/me", headers={"Authorization": f"Bearer {other_session}"}), 401)
    problem(_login(router, user.email, PASSWORD), 401)
    assert _login(router, user.email, "a brand new secret").status_code == 200
    # Once only.
    problem(router.post("/v1/auth/password-reset/complete", json={"token": token, "new_password": "yet another one"}),
            422)
    assert _login(router, user.email, "a brand new secret").status_code == 200

    # Expired: a link older than its lifetime does nothing.
    assert router.post("/v1/auth/password-reset", json={"email": user.email}).status_code == 202
    late = _reset_token(stack, user.email, after={token})
    sql(control, "UPDATE password_resets SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        fingerprint(late))
    problem(router.post("/v1/auth/password-reset/complete", json={"token": late, "new_password": "too late now!"}),
            422)
    assert _login(router, user.email, "a brand new secret").status_code == 200
    problem(router.post("/v1/auth/password-reset/complete", json={"token": "made-up", "new_password": "0123456789"}),
            422)

    # The token appears in no log but the line that stands in for the email (none once it is mailed).
    assert stack.log_dir is not None
    for path in stack.log_dir.glob("*.log"):
        lines = [line for line in path.read_text().splitlines() if token in line]
        assert len(lines) <= (1 if path.name == "router.log" else 0), (path.name, lines)


def test_changing_the_password_needs_the_old_one_and_ends_other_sessions(router: httpx.Client) -> None:
    user = Admin(router)
    other = {"Authorization": f"Bearer {_login(router, user.email, PASSWORD).json()['token']}"}
    body = problem(router.post("/v1/auth/password", headers=user.h,
                               json={"current_password": "not the password", "new_password": "the new password"}), 403)
    assert body["errors"][0]["pointer"] == "/current_password"
    problem(router.post("/v1/auth/password", headers=user.h, json={"current_password": PASSWORD,
                                                                   "new_password": "short"}), 422)
    assert router.get("/v1/auth/me", headers=other).status_code == 200
    r = router.post("/v1/auth/password", headers=user.h,
                    json={"current_password": PASSWORD, "new_password": "the new password"})
    assert r.status_code == 204, r.text
    assert router.get("/v1/auth/me", headers=user.h).status_code == 200  # this session stays
    problem(router.get("/v1/auth/me", headers=other), 401)
    problem(_login(router, user.email, PASSWORD), 401)
    assert _login(router, user.email, "the new password").status_code == 200


def test_profile_update(router: httpx.Client) -> None:
    user, taken = Admin(router), Admin(router)
    r = router.patch("/v1/auth/me", headers=user.h, json={"name": "Ada Lovelace"})
    assert r.status_code == 200 and r.json()["name"] == "Ada Lovelace" and r.json()["email"] == user.email, r.text
    problem(router.patch("/v1/auth/me", headers=user.h, json={"email": f"new-{user.email}"}), 422)
    problem(router.patch("/v1/auth/me", headers=user.h, json={"email": "not-an-email"}), 422)
    problem(router.patch("/v1/auth/me", headers=user.h, json={}), 422)
    problem(router.patch("/v1/auth/me", headers=user.h, json={"email": taken.email, "current_password": PASSWORD}),
            409)
    r = router.patch("/v1/auth/me", headers=user.h, json={"email": f"New-{user.email}", "current_password": PASSWORD})
    assert r.status_code == 200 and r.json()["email"] == f"new-{user.email}", r.text
    assert router.get("/v1/auth/me", headers=user.h).json()["name"] == "Ada Lovelace"
    assert _login(router, f"new-{user.email}", PASSWORD).status_code == 200
    problem(_login(router, user.email, PASSWORD), 401)


def test_sessions_are_listed_and_revocable(router: httpx.Client) -> None:
    user = Admin(router)
    other = {"Authorization": f"Bearer {_login(router, user.email, PASSWORD).json()['token']}"}
    listed = router.get("/v1/auth/sessions", headers=user.h).json()["data"]
    assert len(listed) == 2 and [s["current"] for s in listed].count(True) == 1
    mine = next(s for s in listed if s["current"])
    theirs = next(s for s in listed if not s["current"])
    problem(router.delete(f"/v1/auth/sessions/{theirs['id']}", headers=Admin(router).h), 404)  # not yours
    assert router.delete(f"/v1/auth/sessions/{theirs['id']}", headers=user.h).status_code == 204
    problem(router.get("/v1/auth/me", headers=other), 401)
    assert [s["id"] for s in router.get("/v1/auth/sessions", headers=user.h).json()["data"]] == [mine["id"]]
    problem(router.delete(f"/v1/auth/sessions/{theirs['id']}", headers=user.h), 404)


def test_the_last_owner_cannot_delete_their_account(router: httpx.Client, topo: dict[str, Any]) -> None:
    owner = Admin(router)
    p = owner.project("eu-west")
    r = router.request("DELETE", "/v1/auth/me", headers=owner.h, json={"password": PASSWORD})
    body = problem(r, 409)
    assert p["id"] in body["detail"]
    assert router.get("/v1/auth/me", headers=owner.h).status_code == 200
    problem(router.request("DELETE", "/v1/auth/me", headers=owner.h, json={"password": "wrong password"}), 403)
    successor = owner.member(p, "owner")
    problem(router.request("DELETE", "/v1/auth/me", headers=owner.h, json={"password": "wrong password"}), 403)
    r = router.request("DELETE", "/v1/auth/me", headers=owner.h, json={"password": PASSWORD})
    assert r.status_code == 204, r.text
    problem(router.get("/v1/auth/me", headers=owner.h), 401)
    problem(_login(router, owner.email, PASSWORD), 401)
    assert router.get(f"/v1/projects/{p['id']}", headers=successor.h).status_code == 200
    control = topo["router"]["database_url"]
    assert not sql(control, "SELECT 1 FROM admin_users WHERE id = $1::uuid", owner.user["id"])
    assert not sql(control, "SELECT 1 FROM project_memberships WHERE user_id = $1::uuid", owner.user["id"])
    # The successor, now the last owner, is refused in turn.
    problem(router.request("DELETE", "/v1/auth/me", headers=successor.h, json={"password": PASSWORD}), 409)


def test_a_deleted_account_leaves_its_address_and_name_nowhere(router: httpx.Client, topo: dict[str, Any]) -> None:
    owner = Admin(router)
    p, q = owner.project("us-west"), owner.project("eu-west")
    person = owner.member(p, "agent")  # the accepted invitation holds the address
    pending = router.post(f"/v1/projects/{q['id']}/members", headers=owner.h,
                          json={"email": person.email, "role": "viewer"})  # and one still open
    assert pending.status_code == 201, pending.text
    name = f"Canary {secrets.token_hex(4)}"
    assert router.patch("/v1/auth/me", headers=person.h, json={"name": name}).status_code == 200
    control = topo["router"]["database_url"]
    assert {"admin_users", "project_invitations"} <= set(_rows_naming(control, person.email))

    r = router.request("DELETE", "/v1/auth/me", headers=person.h, json={"password": PASSWORD})
    assert r.status_code == 204, r.text
    # No row of any table of the control database holds the address or the name any more.
    assert _rows_naming(control, person.email) == {} and _rows_naming(control, name) == {}
    assert person.user["id"] not in {m["user_id"] for m in
                                     router.get(f"/v1/projects/{p['id']}/members", headers=owner.h).json()["data"]}
    assert router.get(f"/v1/projects/{q['id']}/invitations", headers=owner.h).json()["data"] == []
    # The trail stays, by id: the project's shows the person joined; the account's own, that it was deleted.
    joined = router.get(f"/v1/projects/{p['id']}/audit-logs", params={"action": "member.joined"},
                        headers=owner.h).json()["data"]
    assert [(e["actor_id"], e["target_id"]) for e in joined] == [(person.user["id"], person.user["id"])]
    [deleted] = sql(control, "SELECT meta FROM audit_logs WHERE action = 'account.deleted' AND target_id = $1",
                    person.user["id"])
    assert json.loads(deleted["meta"])["invitations_removed"] == sorted(
        [pending.json()["id"], *(e["meta"]["invitation_id"] for e in joined)])


def test_every_router_write_appears_in_the_audit_log(router: httpx.Client, topo: dict[str, Any]) -> None:
    user = Admin(router)
    problem(_login(router, user.email, "wrong password!"), 401)
    user.h = {"Authorization": f"Bearer {_login(router, user.email, PASSWORD).json()['token']}"}
    p = user.project("us-west")
    pid = p["id"]
    assert router.patch(f"/v1/projects/{pid}", headers=user.h, json={"name": "Audited shop"}).status_code == 200
    key = user.key(p, ["read"])
    assert router.delete(f"/v1/projects/{pid}/api-keys/{key['id']}", headers=user.h).status_code == 200
    moving = user.project("us-west")
    r = router.post(f"/v1/projects/{moving['id']}/move", headers=user.h, json={"to_region": "eu-west"})
    assert r.status_code == 202, r.text
    move_id = r.json()["move_id"]
    assert router.patch("/v1/auth/me", headers=user.h, json={"name": "Grace"}).status_code == 200
    assert router.post("/v1/auth/password", headers=user.h,
                       json={"current_password": PASSWORD, "new_password": "another password"}).status_code == 204
    second = _login(router, user.email, "another password").json()["token"]
    sessions = router.get("/v1/auth/sessions", headers=user.h).json()["data"]
    other = next(s["id"] for s in sessions if not s["current"])
    assert router.delete(f"/v1/auth/sessions/{other}", headers=user.h).status_code == 204
    problem(router.get("/v1/auth/me", headers={"Authorization": f"Bearer {second}"}), 401)
    gone = user.project("eu-west")
    r = router.delete(f"/v1/projects/{gone['id']}", params={"confirm": gone["name"]}, headers=user.h)
    assert r.status_code == 202, r.text
    # The team: a colleague invited, joined, re-roled and removed; another invitation revoked before use.
    colleague = Admin(router)
    cid = colleague.user["id"]
    user.invite(p, colleague, "agent")
    invited = router.post(f"/v1/projects/{pid}/members", headers=user.h,
                          json={"email": f"never-{colleague.email}", "role": "viewer"})
    assert invited.status_code == 201, invited.text
    assert router.delete(f"/v1/projects/{pid}/invitations/{invited.json()['id']}", headers=user.h).status_code == 204
    assert router.patch(f"/v1/projects/{pid}/members/{cid}", headers=user.h, json={"role": "admin"}).status_code == 200
    assert router.delete(f"/v1/projects/{pid}/members/{cid}", headers=user.h).status_code == 204
    third = Admin(router)
    problem(router.post("/v1/auth/password-reset", json={"email": "not-an-email"}), 422)
    assert router.post("/v1/auth/password-reset", json={"email": third.email}).status_code == 202
    assert router.post("/v1/auth/logout", headers=third.h).status_code == 204

    mine = router.get("/v1/auth/audit-logs", params={"limit": 200}, headers=user.h).json()["data"]
    seen = {(e["action"], e["target_id"]) for e in mine}
    uid = user.user["id"]
    expected = {
        ("account.created", uid), ("auth.login_failed", uid), ("auth.login", uid), ("project.created", pid),
        ("project.renamed", pid), ("api_key.created", key["id"]), ("api_key.revoked", key["id"]),
        ("project.move_requested", move_id), ("account.updated", uid), ("account.password_changed", uid),
        ("auth.session_revoked", other), ("project.deletion_requested", gone["id"]),
        ("member.invitation_revoked", invited.json()["id"]), ("member.role_changed", cid), ("member.removed", cid),
    }
    assert expected <= seen, expected - seen
    assert len([e for e in mine if e["action"] == "member.invited"]) == 2
    role_changed = next(e for e in mine if e["action"] == "member.role_changed")
    assert role_changed["meta"] == {"from": "agent", "to": "admin"} and role_changed["target_type"] == "admin_user"
    # The colleague reads in their own trail that they joined, were re-roled and were removed, and by whom.
    theirs = router.get("/v1/auth/audit-logs", params={"limit": 200}, headers=colleague.h).json()["data"]
    assert [(e["action"], e["actor_id"]) for e in theirs if e["action"].startswith("member.")] == [
        ("member.removed", uid), ("member.role_changed", uid), ("member.joined", cid)]
    again = {"Authorization": f"Bearer {_login(router, third.email, PASSWORD).json()['token']}"}
    assert {e["action"] for e in router.get("/v1/auth/audit-logs", headers=again).json()["data"]} >= {
        "account.password_reset_requested", "auth.logout"}
    failed = next(e for e in mine if e["action"] == "auth.login_failed")
    assert failed["actor_type"] == "anonymous" and failed["actor_id"] is None
    assert all(e["ip_address"] in (None, "127.0.0.0") for e in mine)  # truncated to the /24
    project_log = router.get(f"/v1/projects/{pid}/audit-logs", params={"limit": 200}, headers=user.h).json()["data"]
    assert {"project.created", "project.renamed", "api_key.created", "api_key.revoked", "member.invited",
            "member.joined", "member.invitation_revoked", "member.role_changed", "member.removed"} <= {
        e["action"] for e in project_log if e["source"] == "router"}
    # Ids only: neither the accounts' email and name nor the project's name are in the router's trail.
    control = topo["router"]["database_url"]
    for needle in (user.email, "Grace", "Audited shop", p["name"], PASSWORD, colleague.email, third.email):
        assert not sql(control, "SELECT 1 FROM audit_logs a WHERE a::text LIKE $1", f"%{needle}%"), needle
    # Someone else's trail is not mine.
    assert not {e["target_id"] for e in
                router.get("/v1/auth/audit-logs", headers=Admin(router).h).json()["data"]} & {pid, uid}
