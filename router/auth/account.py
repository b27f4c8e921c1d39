"""A dashboard account's own life after signup: password, reset link, profile, sessions, deletion, audit trail.

Everything here acts on the signed-in account only (never on another
person's), and every change is recorded in the router's audit log
(router/audit.py) with ids only. A changed or reset password ends the
account's other sessions. A reset link holds a one-time token that is sent
once by email and stored only as its SHA-256: it expires
(`RELAY_PASSWORD_RESET_TTL_SECONDS`) and works once. Asking for one answers
the same whether or not the address has an account, so it cannot be used to
find out who has one. An account that is the last owner of a project cannot
be deleted (409) until it hands the project over or deletes it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, delete, get, patch, post

from common.audit import ActorType
from common.ids import uuid7
from common.keys import bearer, fingerprint
from common.mail import send_or_problem
from common.paging import decode_cursor, limit_of
from common.problems import FieldError, Problem
from router import audit
from router.auth import sessions
from router.auth.passwords import check_password as password_matches
from router.auth.passwords import hash_password
from router.auth.routes import AuthOut, User, check_email, check_name, check_password, client_ip, current_session
from router.settings import link_base
from router.state import RouterState, state

log = logging.getLogger("relay.router.account")
RESET_PATH = "/app/reset-password"
"""The dashboard's page a reset link opens; it completes the reset with `POST /v1/auth/password-reset/complete`."""


class PasswordIn(msgspec.Struct, kw_only=True):
    """`POST /v1/auth/password`: the current password, and the new one."""

    current_password: str
    new_password: str

    def __post_init__(self) -> None:
        check_password(self.new_password, "new_password")


class ResetIn(msgspec.Struct, kw_only=True):
    """`POST /v1/auth/password-reset`: where to send a link."""

    email: str

    def __post_init__(self) -> None:
        check_email(self.email)


class ResetAccepted(msgspec.Struct, kw_only=True):
    """The same answer whether or not the address has an account."""

    status: str = "sent"
    expires_in_seconds: int


class ResetCompleteIn(msgspec.Struct, kw_only=True):
    """`POST /v1/auth/password-reset/complete`: the token from the link, and the new password."""

    token: str
    new_password: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.token) <= 200:
            raise ValueError("not a reset token - at `$.token`")
        check_password(self.new_password, "new_password")


class ProfileIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PATCH /v1/auth/me`: absent fields are left alone; changing the email needs the current password."""

    name: str | None = None
    email: str | None = None
    current_password: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name)
        if self.email is not None:
            check_email(self.email)


class DeleteAccountIn(msgspec.Struct, kw_only=True):
    """`DELETE /v1/auth/me`: the current password, to be sure it is the person."""

    password: str


class SessionOut(msgspec.Struct, kw_only=True):
    """One open session of the account; `current` is the one making this request."""

    id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    current: bool


class SessionList(msgspec.Struct):
    data: list[SessionOut]
    next_cursor: str | None = None


def _token(request: Request[Any, Any, Any]) -> str:
    token = bearer(request.headers.get("authorization"))
    assert token is not None  # current_session checked it
    return token


async def _verified(st: RouterState, request: Request[Any, Any, Any], user_id: uuid.UUID, password: str,
                    field: str) -> asyncpg.Record:
    """The account's row once `password` is its password; a wrong one counts like a failed sign-in (403)."""
    account = ("account", hashlib.sha256(str(user_id).encode()).hexdigest()[:24])
    await st.limiter.enforce("login_account", *account, count=False)
    row = await st.pool.fetchrow("SELECT id, email, name, created_at, password_hash FROM admin_users WHERE id = $1",
                                 user_id)
    if row is None:
        raise Problem(401, "account no longer exists")
    if not await password_matches(password, row["password_hash"]):
        await st.limiter.hit("login_account", *account)
        await audit.record(st.pool, action="auth.password_check_failed", actor_id=user_id, project_id=None,
                           target_type="admin_user", target_id=user_id, ip=client_ip(request))
        raise Problem(403, "the current password is not right", errors=[FieldError(f"/{field}", "not right")])
    return row


def reset_message(link: str, ttl_seconds: int) -> tuple[str, str]:
    """Subject and plain-text body of a reset email."""
    minutes = ttl_seconds // 60
    body = (f"Someone asked to reset the password of your Relay account.\n\n"
            f"To choose a new password, open this link within {minutes} minutes (it works once):\n\n{link}\n\n"
            "If it was not you, ignore this email: your password stays as it is.\n")
    return "Reset your Relay password", body


@post("/v1/auth/password", status_code=204)
async def change_password(request: Request[Any, Any, Any], data: PasswordIn) -> None:
    """Change the password (the current one required); every other session of the account ends."""
    st = state(request)
    session = await current_session(request)
    await _verified(st, request, session.user_id, data.current_password, "current_password")
    hashed = await hash_password(data.new_password)
    async with st.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE admin_users SET password_hash = $2 WHERE id = $1", session.user_id, hashed)
        ended = await sessions.end_all(conn, session.user_id, keep=_token(request))
        await conn.execute("DELETE FROM password_resets WHERE user_id = $1", session.user_id)
        await audit.record(conn, action="account.password_changed", actor_id=session.user_id, project_id=None,
                           target_type="admin_user", target_id=session.user_id, ip=client_ip(request),
                           metadata={"sessions_ended": ended})


@post("/v1/auth/password-reset", status_code=202)
async def request_reset(request: Request[Any, Any, Any], data: ResetIn) -> ResetAccepted:
    """Email a one-time reset link to the address if it has an account; the same answer either way."""
    st = state(request)
    email = data.email.lower()
    await st.limiter.enforce("login_account", "reset", hashlib.sha256(email.encode()).hexdigest()[:24])
    ttl = st.settings.password_reset_ttl_seconds
    user_id = await st.pool.fetchval("SELECT id FROM admin_users WHERE email = $1", email)
    if user_id is not None:
        token = secrets.token_urlsafe(32)
        link = f"{link_base(st.settings)}{RESET_PATH}?token={token}"
        async with st.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO password_resets (id, user_id, token_hash, expires_at)
                   VALUES ($1, $2, $3, now() + make_interval(secs => $4))""",
                uuid7(), user_id, fingerprint(token), ttl)
            await audit.record(conn, action="account.password_reset_requested", actor_id=None,
                               actor_type="anonymous", project_id=None, target_type="admin_user",
                               target_id=user_id, ip=client_ip(request))
            # Sent before the commit: a reset nobody could receive is not left behind.
            await send_or_problem(st.mailer, email, *reset_message(link, ttl), what="password reset email")
    return ResetAccepted(expires_in_seconds=ttl)


@post("/v1/auth/password-reset/complete", status_code=200)
async def complete_reset(request: Request[Any, Any, Any], data: ResetCompleteIn) -> AuthOut:
    """Set a new password with a reset link's token (once, before it expires); every session ends, and a new
    one is returned."""
    st = state(request)
    hashed = await hash_password(data.new_password)
    async with st.pool.acquire() as conn, conn.transaction():
        user_id = await conn.fetchval(
            """UPDATE password_resets SET used_at = now()
                WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING user_id""",
            fingerprint(data.token))
        if user_id is None:
            raise Problem(422, "this reset link is not valid: used already, expired, or never issued",
                          errors=[FieldError("/token", "not valid")])
        row = await conn.fetchrow(
            "UPDATE admin_users SET password_hash = $2 WHERE id = $1 RETURNING id, email, name, created_at",
            user_id, hashed)
        assert row is not None
        ended = await sessions.end_all(conn, user_id)
        await conn.execute("DELETE FROM password_resets WHERE user_id = $1 AND used_at IS NULL", user_id)
        token = await sessions.create(conn, user_id, st.settings.session_ttl_seconds)
        await audit.record(conn, action="account.password_reset", actor_id=user_id, project_id=None,
                           target_type="admin_user", target_id=user_id, ip=client_ip(request),
                           metadata={"sessions_ended": ended})
    return AuthOut(msgspec.convert(dict(row), User), token)


@patch("/v1/auth/me")
async def update_profile(request: Request[Any, Any, Any], data: ProfileIn) -> User:
    """Change the account's name or email address (a new address needs the current password)."""
    st = state(request)
    session = await current_session(request)
    if data.name is None and data.email is None:
        raise Problem(422, "nothing to change: send name or email")
    if data.email is not None:
        if data.current_password is None:
            raise Problem(422, "changing the email address needs the current password",
                          errors=[FieldError("/current_password", "required with email")])
        await _verified(st, request, session.user_id, data.current_password, "current_password")
    changed = sorted(k for k in ("name", "email") if getattr(data, k) is not None)
    async with st.pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                """UPDATE admin_users SET name = coalesce($2, name), email = coalesce($3, email) WHERE id = $1
                   RETURNING id, email, name, created_at""",
                session.user_id, data.name, data.email.lower() if data.email else None)
        except asyncpg.UniqueViolationError:
            raise Problem(409, "an account with this email exists") from None
        if row is None:
            raise Problem(401, "account no longer exists")
        await audit.record(conn, action="account.updated", actor_id=session.user_id, project_id=None,
                           target_type="admin_user", target_id=session.user_id, ip=client_ip(request),
                           metadata={"fields": changed})
    return msgspec.convert(dict(row), User)


@delete("/v1/auth/me", status_code=204)
async def delete_account(request: Request[Any, Any, Any], data: DeleteAccountIn) -> None:
    """Delete the account, its sessions, memberships and the invitations holding its address (its password
    required); 409 while it is the last owner of a project, which must first get another owner or be deleted.
    Its audit trail stays (ids only)."""
    st = state(request)
    session = await current_session(request)
    await _verified(st, request, session.user_id, data.password, "password")
    async with st.pool.acquire() as conn, conn.transaction():
        # The memberships are locked: no one can leave this person the last owner while the account goes.
        orphaned = await conn.fetch(
            """SELECT m.project_id FROM project_memberships m JOIN project_directory p ON p.id = m.project_id
                WHERE m.user_id = $1 AND m.role = 'owner' AND p.state <> 'deleting'
                  AND NOT EXISTS (SELECT 1 FROM project_memberships o
                                   WHERE o.project_id = m.project_id AND o.role = 'owner' AND o.user_id <> $1)
                ORDER BY m.project_id FOR UPDATE OF m""", session.user_id)
        if orphaned:
            ids = ", ".join(str(r["project_id"]) for r in orphaned)
            raise Problem(409, f"you are the last owner of {len(orphaned)} project(s) ({ids}): make someone else"
                          " an owner or delete them first")
        # The invitations that hold the person's address (the ones they accepted, and any still open for it)
        # go with the account: nothing of the person's email stays in the control database.
        removed = await conn.fetch(
            """DELETE FROM project_invitations
                WHERE accepted_by = $1 OR email = (SELECT email FROM admin_users WHERE id = $1)
                RETURNING id""",
            session.user_id)
        await conn.execute("DELETE FROM admin_users WHERE id = $1", session.user_id)
        await audit.record(conn, action="account.deleted", actor_id=session.user_id, project_id=None,
                           target_type="admin_user", target_id=session.user_id, ip=client_ip(request),
                           metadata={"invitations_removed": sorted(str(r["id"]) for r in removed)})


@get("/v1/auth/sessions")
async def list_sessions(request: Request[Any, Any, Any]) -> SessionList:
    """The account's open sessions, newest first (a session is where someone is signed in as this account)."""
    session = await current_session(request)
    rows = await sessions.listed(state(request).pool, session.user_id, _token(request))
    return SessionList([msgspec.convert(dict(r), SessionOut) for r in rows])


@delete("/v1/auth/sessions/{session_id:uuid}", status_code=204)
async def revoke_session(request: Request[Any, Any, Any], session_id: uuid.UUID) -> None:
    """End one of the account's sessions (this one included: that is a logout)."""
    st = state(request)
    session = await current_session(request)
    if not await sessions.end(st.pool, session.user_id, session_id):
        raise Problem(404, "no such session")
    await audit.record(st.pool, action="auth.session_revoked", actor_id=session.user_id, project_id=None,
                       target_type="session", target_id=session_id, ip=client_ip(request))


@get("/v1/auth/audit-logs")
async def account_audit_logs(request: Request[Any, Any, Any], action: str | None = None,
                             actor_type: ActorType | None = None, created_after: datetime | None = None,
                             created_before: datetime | None = None, cursor: str | None = None,
                             limit: int | None = None) -> Response[audit.AuditPage]:
    """The account's own trail, newest first: what it did anywhere (projects included) and what was done to it
    (sign-ins, failed ones too, resets)."""
    session = await current_session(request)
    filters = audit.Filters(action=action, actor_type=actor_type, created_after=created_after,
                            created_before=created_before)
    page = await audit.for_account(state(request).pool, session.user_id, filters,
                                   decode_cursor(cursor) if cursor else None, limit_of(limit))
    return Response(page)


ROUTES = [change_password, request_reset, complete_reset, update_profile, delete_account, list_sessions,
          revoke_session, account_audit_logs]
