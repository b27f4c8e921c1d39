"""Members and invitations through the router: adding someone by email sends a one-time link (read here from
the `.eml` file `relay dev` writes), accepted only by the account holding that address; owners are changed
only by owners, and the last owner stays."""

from __future__ import annotations

import concurrent.futures
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from common.keys import fingerprint
from tests import mailbox
from tests.conftest import Admin, problem, sql


def _invite(router: httpx.Client, by: Admin, project: dict[str, str], email: str, role: str) -> dict[str, str]:
    r = router.post(f"/v1/projects/{project['id']}/members", json={"email": email, "role": role}, headers=by.h)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _roles(router: httpx.Client, admin: Admin, project: dict[str, str]) -> dict[str, str]:
    r = router.get(f"/v1/projects/{project['id']}/members", headers=admin.h)
    assert r.status_code == 200, r.text
    return {m["email"]: m["role"] for m in r.json()["data"]}


def test_an_invitation_is_mailed_and_accepted_once_by_its_address(router: httpx.Client, admin: Admin,
                                                                  topo: dict[str, Any]) -> None:
    p = admin.project("eu-west")
    invitee, stranger = Admin(router), Admin(router)
    body = _invite(router, admin, p, invitee.email.upper(), "agent")
    assert body["status"] == "invited" and body["email"] == invitee.email and body["role"] == "agent"
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    # Not a member until accepted: nothing of the project opens for them.
    assert invitee.email not in _roles(router, admin, p)
    problem(router.get(f"/v1/projects/{p['id']}/interactions", headers=invitee.h), 404)
    pending = router.get(f"/v1/projects/{p['id']}/invitations", headers=admin.h).json()["data"]
    assert [(i["email"], i["role"], i["id"]) for i in pending] == [(invitee.email, "agent", body["id"])]

    (message,) = mailbox.wait_for(mailbox.directory_of(router), invitee.email)
    assert p["name"] in str(message["Subject"]) and message["Auto-Submitted"] == "auto-generated"
    token = mailbox.invitation_token(message)
    assert f"/app/invitations/{token}" in message.get_content()
    # Only the token's digest is stored.
    (row,) = sql(topo["router"]["database_url"], "SELECT * FROM project_invitations WHERE id = $1::uuid", body["id"])
    assert row["token_hash"] == fingerprint(token) and token not in str(dict(row))

    problem(router.post(f"/v1/invitations/{token}/accept"), 401)
    problem(router.post(f"/v1/invitations/{token}/accept", headers=stranger.h), 403)  # another address
    problem(router.post(f"/v1/invitations/{token[:-2]}xx/accept", headers=invitee.h), 404)
    r = router.post(f"/v1/invitations/{token}/accept", headers=invitee.h)
    assert r.status_code == 200, r.text
    assert r.json()["project_id"] == p["id"] and r.json()["role"] == "agent"
    assert r.json()["user_id"] == invitee.user["id"]
    assert _roles(router, admin, p)[invitee.email] == "agent"
    assert router.get(f"/v1/projects/{p['id']}/interactions", headers=invitee.h).status_code == 200
    # Used once; no longer pending; inviting a member again is a conflict.
    problem(router.post(f"/v1/invitations/{token}/accept", headers=invitee.h), 404)
    assert router.get(f"/v1/projects/{p['id']}/invitations", headers=admin.h).json()["data"] == []
    problem(router.post(f"/v1/projects/{p['id']}/members", json={"email": invitee.email, "role": "viewer"},
                        headers=admin.h), 409)
    assert stranger.email not in _roles(router, admin, p)


def test_invitations_for_people_without_an_account_expire_and_can_be_revoked(router: httpx.Client, admin: Admin,
                                                                             topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    directory = mailbox.directory_of(router)
    # Invited before they have an account: they sign up with the address, then accept.
    later = f"later-{secrets.token_hex(4)}@example.com"
    _invite(router, admin, p, later, "viewer")
    token = mailbox.invitation_token(mailbox.wait_for(directory, later)[-1])
    r = router.post("/v1/auth/signup", json={"email": later, "password": "correct horse battery staple",
                                             "name": "Later"})
    assert r.status_code == 201, r.text
    assert router.post(f"/v1/invitations/{token}/accept",
                       headers={"Authorization": f"Bearer {r.json()['token']}"}).status_code == 200
    assert _roles(router, admin, p)[later] == "viewer"

    # Inviting again replaces the open invitation: the first link stops working.
    person = Admin(router)
    _invite(router, admin, p, person.email, "viewer")
    first = mailbox.invitation_token(mailbox.wait_for(directory, person.email)[-1])
    second_invite = _invite(router, admin, p, person.email, "agent")
    second = mailbox.invitation_token(mailbox.wait_for(directory, person.email, 2)[-1])
    assert first != second
    problem(router.post(f"/v1/invitations/{first}/accept", headers=person.h), 404)
    # Revoked: the link stops working, and it leaves the pending list.
    r = router.delete(f"/v1/projects/{p['id']}/invitations/{second_invite['id']}", headers=admin.h)
    assert r.status_code == 204, r.text
    assert router.get(f"/v1/projects/{p['id']}/invitations", headers=admin.h).json()["data"] == []
    problem(router.post(f"/v1/invitations/{second}/accept", headers=person.h), 404)
    problem(router.delete(f"/v1/projects/{p['id']}/invitations/{second_invite['id']}", headers=admin.h), 404)
    # Expired after 7 days.
    third_invite = _invite(router, admin, p, person.email, "agent")
    third = mailbox.invitation_token(mailbox.wait_for(directory, person.email, 3)[-1])
    sql(topo["router"]["database_url"],
        "UPDATE project_invitations SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
        third_invite["id"])
    problem(router.post(f"/v1/invitations/{third}/accept", headers=person.h), 404)
    assert person.email not in _roles(router, admin, p)


def test_owners_are_changed_only_by_owners_and_the_last_one_stays(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("us-west")
    manager = admin.member(p, "admin")
    agent = admin.member(p, "agent")
    base = f"/v1/projects/{p['id']}/members"
    owner_id, agent_id, manager_id = admin.user["id"], agent.user["id"], manager.user["id"]

    # Keys and lower roles do not manage people; an admin grants up to admin.
    key = admin.key(p, ["admin"])
    problem(router.post(base, json={"email": "x@example.com", "role": "viewer"}, headers=key["h"]), 403)
    problem(router.post(base, json={"email": "x@example.com", "role": "viewer"}, headers=agent.h), 403)
    problem(router.post(base, json={"email": "x@example.com", "role": "owner"}, headers=manager.h), 403)
    problem(router.post(base, json={"email": "not an address", "role": "viewer"}, headers=admin.h), 422)
    problem(router.patch(f"{base}/{agent_id}", json={"role": "owner"}, headers=manager.h), 403)
    problem(router.patch(f"{base}/{agent_id}", json={"role": "boss"}, headers=admin.h), 422)

    # Role changes.
    r = router.patch(f"{base}/{agent_id}", json={"role": "viewer"}, headers=manager.h)
    assert r.status_code == 200 and r.json()["role"] == "viewer" and r.json()["user_id"] == agent_id, r.text
    assert _roles(router, admin, p)[agent.email] == "viewer"
    problem(router.patch(f"{base}/{agent_id}", json={"role": "agent"}, headers=agent.h), 403)

    # An admin neither demotes nor removes an owner; the last owner is never demoted or removed.
    problem(router.patch(f"{base}/{owner_id}", json={"role": "viewer"}, headers=manager.h), 403)
    problem(router.delete(f"{base}/{owner_id}", headers=manager.h), 403)
    problem(router.patch(f"{base}/{owner_id}", json={"role": "admin"}, headers=admin.h), 409)
    problem(router.delete(f"{base}/{owner_id}", headers=admin.h), 409)
    assert _roles(router, admin, p)[admin.email] == "owner"

    # With two owners, one owner may demote the other; then that one is the last again.
    r = router.patch(f"{base}/{manager_id}", json={"role": "owner"}, headers=admin.h)
    assert r.status_code == 200 and r.json()["role"] == "owner", r.text
    r = router.patch(f"{base}/{owner_id}", json={"role": "admin"}, headers=manager.h)
    assert r.status_code == 200 and r.json()["role"] == "admin", r.text
    problem(router.delete(f"{base}/{manager_id}", headers=admin.h), 403)  # an admin now
    problem(router.delete(f"{base}/{manager_id}", headers=manager.h), 409)  # the last owner
    assert router.delete(f"{base}/{agent_id}", headers=manager.h).status_code == 204
    problem(router.get(f"/v1/projects/{p['id']}/interactions", headers=agent.h), 404)
    problem(router.delete(f"{base}/{agent_id}", headers=manager.h), 404)
    assert _roles(router, admin, p) == {admin.email: "admin", manager.email: "owner"}


def test_two_owners_demoting_each_other_at_once_leave_one_owner(router: httpx.Client, admin: Admin) -> None:
    def demote(by: Admin, project: dict[str, str], whom: Admin) -> httpx.Response:
        return router.patch(f"/v1/projects/{project['id']}/members/{whom.user['id']}", json={"role": "admin"},
                            headers=by.h)

    for _ in range(5):
        p = admin.project("eu-west")
        other = admin.member(p, "owner")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = [f.result() for f in [pool.submit(demote, admin, p, other), pool.submit(demote, other, p, admin)]]
        # Whichever commits first wins; the other finds either the last owner to keep (409) or, when it is
        # handled after that commit, that its caller is no longer an owner (403). Never both demoted.
        assert sorted(r.status_code for r in answers) in ([200, 403], [200, 409]), [r.text for r in answers]
        assert sorted(_roles(router, admin, p).values()) == ["admin", "owner"]


def test_member_changes_are_in_the_project_audit_log_with_ids_only(router: httpx.Client, admin: Admin,
                                                                    topo: dict[str, Any]) -> None:
    p = admin.project("us-west")
    person = Admin(router)
    invited = _invite(router, admin, p, person.email, "agent")
    token = mailbox.invitation_token(mailbox.wait_for(mailbox.directory_of(router), person.email)[-1])
    assert router.post(f"/v1/invitations/{token}/accept", headers=person.h).status_code == 200
    base = f"/v1/projects/{p['id']}/members/{person.user['id']}"
    assert router.patch(base, json={"role": "viewer"}, headers=admin.h).status_code == 200
    assert router.delete(base, headers=admin.h).status_code == 204
    nobody = f"nobody-{secrets.token_hex(4)}@example.com"
    other = _invite(router, admin, p, nobody, "viewer")
    assert router.delete(f"/v1/projects/{p['id']}/invitations/{other['id']}", headers=admin.h).status_code == 204

    entries = router.get(f"/v1/projects/{p['id']}/audit-logs", params={"limit": 200}, headers=admin.h).json()["data"]
    me, them = admin.user["id"], person.user["id"]
    assert [(e["action"], e["target_id"], e["actor_id"], e["meta"]) for e in reversed(entries)
            if e["source"] == "router" and e["action"].startswith("member.")] == [
        ("member.invited", invited["id"], me, {"role": "agent"}),
        ("member.joined", them, them, {"role": "agent", "invitation_id": invited["id"]}),
        ("member.role_changed", them, me, {"from": "agent", "to": "viewer"}),
        ("member.removed", them, me, {"role": "viewer"}),
        ("member.invited", other["id"], me, {"role": "viewer"}),
        ("member.invitation_revoked", other["id"], me, {"role": "viewer"}),
    ]
    for address in (person.email, nobody):  # the router's trail holds ids, never an address
        assert not sql(topo["router"]["database_url"], "SELECT 1 FROM audit_logs a WHERE a::text LIKE $1",
                       f"%{address}%")
