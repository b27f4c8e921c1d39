"""`/v1/projects/{id}/members` and `/v1/projects/{id}/invitations`, and `POST /v1/invitations/{token}/accept`.

Only dashboard users manage the team (an API key gets 403). Admins invite,
re-role and remove up to admin; owners are granted, demoted and removed only
by owners, and the last owner always stays (409). Each change is in the
project's audit log (router.audit: ids and roles, never an address).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from litestar import Request, delete, get, patch, post

from common.ids import uuid7
from common.mail import send_or_problem
from common.problems import Problem
from router import access, audit
from router.auth.routes import current_session
from router.auth.sessions import Session
from router.members import invitations
from router.members.types import Accepted, Invitation, InvitationList, Member, MemberIn, MemberList, RoleIn
from router.projects.routes import ROLE_LEVEL, _actor
from router.state import RouterState, state

_MEMBER = """SELECT m.user_id, u.email, u.name, m.role::text AS role, m.joined_at
               FROM project_memberships m JOIN admin_users u ON u.id = m.user_id"""


async def _manager(request: Request[Any, Any, Any], st: RouterState, project_id: uuid.UUID,
                   min_level: int = ROLE_LEVEL["admin"]) -> Session:
    """The dashboard user managing the team (role checked); API keys do not manage people."""
    _, _, session = await _actor(request, st, project_id, min_level)
    if session is None:
        raise Problem(403, "members are managed by dashboard users")
    assert session.role is not None
    return session


def _may_grant(session: Session, role: str) -> None:
    if ROLE_LEVEL[role] > ROLE_LEVEL[session.role or "viewer"]:
        raise Problem(403, "you cannot grant a role above your own")


async def _member(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID, user_id: uuid.UUID) -> Member:
    row = await conn.fetchrow(f"{_MEMBER} WHERE m.project_id = $1 AND m.user_id = $2", project_id, user_id)
    if row is None:
        raise Problem(404, "no such member")
    return Member(**dict(row))


async def _owner_change(conn: asyncpg.Connection, session: Session, project_id: uuid.UUID,
                        user_id: uuid.UUID, new_role: str | None) -> str:
    """Lock the member's row and check that the caller may give it `new_role` (None: remove it); the
    member's current role.

    The member's row and every owner's are locked in one statement, in id order, so two owners demoting
    each other at once neither deadlock nor leave the project with no owner (the second one re-reads the
    first one's change and gets 409)."""
    rows = await conn.fetch(
        """SELECT user_id, role::text AS role FROM project_memberships
            WHERE project_id = $1 AND (role = 'owner' OR user_id = $2) ORDER BY id FOR UPDATE""",
        project_id, user_id)
    role = next((r["role"] for r in rows if r["user_id"] == user_id), None)
    if role is None:
        raise Problem(404, "no such member")
    if role == "owner" and new_role != "owner":
        if session.role != "owner":
            raise Problem(403, "only an owner can change an owner")
        if sum(r["role"] == "owner" for r in rows) <= 1:
            raise Problem(409, "a project keeps at least one owner")
    return str(role)


@post("/v1/projects/{project_id:uuid}/members", status_code=201)
async def invite_member(request: Request[Any, Any, Any], project_id: uuid.UUID, data: MemberIn) -> Invitation:
    """Invite someone by email: they get a one-time link and become a member when they accept it."""
    st = state(request)
    session = await _manager(request, st, project_id)
    _may_grant(session, data.role)
    async with st.pool.acquire() as conn, conn.transaction():
        member = await conn.fetchval(
            """SELECT 1 FROM project_memberships m JOIN admin_users u ON u.id = m.user_id
                WHERE m.project_id = $1 AND u.email = $2""", project_id, data.email)
        if member:
            raise Problem(409, "already a member; change their role with PATCH …/members/{user_id}")
        token = invitations.new_token()
        row = await invitations.replace(conn, project_id, data.email, data.role, session.user_id, token)
        about = await conn.fetchrow(
            """SELECT p.name AS project, coalesce(u.name, u.email) AS inviter
                 FROM project_directory p, admin_users u WHERE p.id = $1 AND u.id = $2""",
            project_id, session.user_id)
        assert about is not None
        link = f"{str(request.base_url).rstrip('/')}/app/invitations/{token}"
        subject, body = invitations.message(about["project"], about["inviter"], data.role, link, token,
                                            row["expires_at"])
        await audit.record(conn, action="member.invited", actor_id=session.user_id, project_id=project_id,
                           target_type="invitation", target_id=row["id"], ip=access.client_ip(st, request.scope),
                           metadata={"role": data.role})
        # Sent before the commit: an invitation nobody could receive is not left behind.
        await send_or_problem(st.mailer, data.email, subject, body, what="invitation email")
    return Invitation(**dict(row))


@get("/v1/projects/{project_id:uuid}/members")
async def list_members(request: Request[Any, Any, Any], project_id: uuid.UUID) -> MemberList:
    """Everyone with a role in the project."""
    st = state(request)
    await _actor(request, st, project_id, ROLE_LEVEL["viewer"])
    rows = await st.pool.fetch(f"{_MEMBER} WHERE m.project_id = $1 ORDER BY m.joined_at, m.id", project_id)
    return MemberList([Member(**dict(r)) for r in rows])


@patch("/v1/projects/{project_id:uuid}/members/{user_id:uuid}")
async def change_role(request: Request[Any, Any, Any], project_id: uuid.UUID, user_id: uuid.UUID,
                      data: RoleIn) -> Member:
    """Give a member another role (up to the caller's own); an owner is demoted only by an owner, never the last."""
    st = state(request)
    session = await _manager(request, st, project_id)
    _may_grant(session, data.role)
    async with st.pool.acquire() as conn, conn.transaction():
        role = await _owner_change(conn, session, project_id, user_id, data.role)
        if role != data.role:
            await conn.execute("UPDATE project_memberships SET role = $3 WHERE project_id = $1 AND user_id = $2",
                               project_id, user_id, data.role)
            await audit.record(conn, action="member.role_changed", actor_id=session.user_id, project_id=project_id,
                               target_type="admin_user", target_id=user_id, ip=access.client_ip(st, request.scope),
                               metadata={"from": role, "to": data.role})
        return await _member(conn, project_id, user_id)


@delete("/v1/projects/{project_id:uuid}/members/{user_id:uuid}", status_code=204)
async def remove_member(request: Request[Any, Any, Any], project_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Remove a member; an owner is removed only by an owner, and the last owner never."""
    st = state(request)
    session = await _manager(request, st, project_id)
    async with st.pool.acquire() as conn, conn.transaction():
        role = await _owner_change(conn, session, project_id, user_id, None)
        await conn.execute("DELETE FROM project_memberships WHERE project_id = $1 AND user_id = $2",
                           project_id, user_id)
        await audit.record(conn, action="member.removed", actor_id=session.user_id, project_id=project_id,
                           target_type="admin_user", target_id=user_id, ip=access.client_ip(st, request.scope),
                           metadata={"role": role})


@get("/v1/projects/{project_id:uuid}/invitations")
async def list_invitations(request: Request[Any, Any, Any], project_id: uuid.UUID) -> InvitationList:
    """The invitations still open (neither accepted, revoked nor expired), newest first."""
    st = state(request)
    await _manager(request, st, project_id)
    rows = await st.pool.fetch(
        f"""SELECT {invitations.COLUMNS} FROM project_invitations
             WHERE project_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()
             ORDER BY created_at DESC, id DESC""", project_id)
    return InvitationList([Invitation(**dict(r)) for r in rows])


@delete("/v1/projects/{project_id:uuid}/invitations/{invitation_id:uuid}", status_code=204)
async def revoke_invitation(request: Request[Any, Any, Any], project_id: uuid.UUID,
                            invitation_id: uuid.UUID) -> None:
    """Revoke an open invitation: its link stops working. An owner's invitation is revoked only by an owner."""
    st = state(request)
    session = await _manager(request, st, project_id)
    async with st.pool.acquire() as conn, conn.transaction():
        role = await conn.fetchval(
            """SELECT role::text FROM project_invitations
                WHERE id = $1 AND project_id = $2 AND accepted_at IS NULL AND revoked_at IS NULL FOR UPDATE""",
            invitation_id, project_id)
        if role is None:
            raise Problem(404, "no such invitation")
        _may_grant(session, role)
        await conn.execute("UPDATE project_invitations SET revoked_at = now() WHERE id = $1", invitation_id)
        await audit.record(conn, action="invitation.revoked", actor_id=session.user_id, project_id=project_id,
                           target_type="invitation", target_id=invitation_id, ip=access.client_ip(st, request.scope),
                           metadata={"role": role})


@post("/v1/invitations/{token:str}/accept", status_code=200)
async def accept_invitation(request: Request[Any, Any, Any], token: str) -> Accepted:
    """Join the project an invitation names, signed in with the address it was sent to (once; 7 days)."""
    st = state(request)
    session = await current_session(request)
    if not token.startswith(invitations.PREFIX) or len(token) > 100:
        raise Problem(404, "no such invitation, or it was used, revoked or has expired")
    async with st.pool.acquire() as conn, conn.transaction():
        invitation = await invitations.open_for_token(conn, token)
        if invitation is None:
            raise Problem(404, "no such invitation, or it was used, revoked or has expired")
        email = await conn.fetchval("SELECT email FROM admin_users WHERE id = $1", session.user_id)
        if email is None or email.lower() != invitation["email"]:
            raise Problem(403, "this invitation was sent to another email address; sign in with that one")
        row = await conn.fetchrow(
            """INSERT INTO project_memberships (id, user_id, project_id, role) VALUES ($1, $2, $3, $4)
               ON CONFLICT (user_id, project_id) DO UPDATE SET role = project_memberships.role
               RETURNING project_id, user_id, role::text AS role, joined_at""",
            uuid7(), session.user_id, invitation["project_id"], invitation["role"])
        assert row is not None
        await conn.execute(
            "UPDATE project_invitations SET accepted_at = now(), accepted_by = $2 WHERE id = $1",
            invitation["id"], session.user_id)
        await audit.record(conn, action="member.joined", actor_id=session.user_id,
                           project_id=invitation["project_id"], target_type="invitation", target_id=invitation["id"],
                           ip=access.client_ip(st, request.scope), metadata={"role": row["role"]})
    return Accepted(**dict(row))


ROUTES = [invite_member, list_members, change_role, remove_member, list_invitations, revoke_invitation,
          accept_invitation]
