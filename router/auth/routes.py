"""`/v1/auth`: signup, login, logout, and who am I (the rest of an account's life: router/auth/account.py)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, get, post

from common.ids import uuid7
from common.keys import bearer, presented
from common.problems import Problem
from router import access, audit
from router.auth import sessions
from router.auth.passwords import check_password as password_matches
from router.auth.passwords import hash_password
from router.ratelimit import client_tag
from router.state import state


class SignupIn(msgspec.Struct):
    """`POST /v1/auth/signup`."""

    email: str
    password: str
    name: str

    def __post_init__(self) -> None:
        check_email(self.email)
        check_password(self.password, "password")
        check_name(self.name)


class LoginIn(msgspec.Struct):
    """`POST /v1/auth/login`."""

    email: str
    password: str


class User(msgspec.Struct):
    """A dashboard user."""

    id: uuid.UUID
    email: str
    name: str | None
    created_at: datetime


class AuthOut(msgspec.Struct):
    """A user and their new session token."""

    user: User
    token: str


def check_email(email: str) -> None:
    """Refuse what cannot be an email address (ValueError naming `$.email`, a 422 at the edge)."""
    if len(email) > 255 or "@" not in email or " " in email or email.startswith("@") or email.endswith("@"):
        raise ValueError("not an email address - at `$.email`")


def check_password(password: str, field: str) -> None:
    """A new password's bounds (the field named as `field` in the 422)."""
    if not 10 <= len(password) <= 200:
        raise ValueError(f"password must be 10 to 200 characters - at `$.{field}`")


def check_name(name: str) -> None:
    """A person's name as shown to their team."""
    if not 1 <= len(name) <= 255:
        raise ValueError("name must be 1 to 255 characters - at `$.name`")


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    """The caller's address (behind trusted proxies, the client they name: `router.access.client_ip`), for the
    audit log (which truncates it)."""
    return access.client_ip(state(request), request.scope)


@post("/v1/auth/signup", status_code=201)
async def signup(request: Request[Any, Any, Any], data: SignupIn) -> AuthOut:
    """Create a dashboard account and sign it in (limited per client and per email: a signup costs a bcrypt)."""
    st = state(request)
    await st.limiter.enforce("signup_client", client_tag(access.client_ip(st, request.scope)))
    await st.limiter.enforce("signup_email", *_account(data.email))
    hashed = await hash_password(data.password)
    async with st.pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                """INSERT INTO admin_users (id, email, password_hash, name, last_login_at)
                   VALUES ($1, $2, $3, $4, now()) RETURNING id, email, name, created_at""",
                uuid7(), data.email.lower(), hashed, data.name,
            )
        except asyncpg.UniqueViolationError:
            raise Problem(409, "an account with this email exists") from None
        assert row is not None
        token = await sessions.create(conn, row["id"], st.settings.session_ttl_seconds)
        await audit.record(conn, action="account.created", actor_id=row["id"], project_id=None,
                           target_type="admin_user", target_id=row["id"], ip=client_ip(request))
    return AuthOut(msgspec.convert(dict(row), User), token)


@post("/v1/auth/login", status_code=200)
async def login(request: Request[Any, Any, Any], data: LoginIn) -> AuthOut:
    """Exchange email and password for a session token."""
    st = state(request)
    account = _account(data.email)
    client = client_tag(access.client_ip(st, request.scope))
    await st.limiter.enforce("login_account", *account, count=False)
    await st.limiter.enforce("login_client", client, count=False)
    row = await st.pool.fetchrow(
        "SELECT id, email, name, created_at, password_hash FROM admin_users WHERE email = $1", data.email.lower())
    if not await password_matches(data.password, row["password_hash"] if row else None) or row is None:
        await st.limiter.hit("login_account", *account)
        await st.limiter.hit("login_client", client)
        await audit.record(st.pool, action="auth.login_failed", actor_id=None, actor_type="anonymous",
                           project_id=None, target_type="admin_user" if row else None,
                           target_id=row["id"] if row else None, ip=client_ip(request))
        raise Problem(401, "wrong email or password")
    async with st.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE admin_users SET last_login_at = now() WHERE id = $1", row["id"])
        token = await sessions.create(conn, row["id"], st.settings.session_ttl_seconds)
        await audit.record(conn, action="auth.login", actor_id=row["id"], project_id=None,
                           target_type="admin_user", target_id=row["id"], ip=client_ip(request))
    user = {k: row[k] for k in ("id", "email", "name", "created_at")}
    return AuthOut(msgspec.convert(user, User), token)


@post("/v1/auth/logout", status_code=204)
async def logout(request: Request[Any, Any, Any]) -> None:
    """Revoke the session that made this request."""
    token = bearer(request.headers.get("authorization"))
    if token is None or not token.startswith("rs_"):
        raise Problem(401, "send the session token as Authorization: Bearer")
    session = await current_session(request)
    await sessions.revoke(state(request).pool, token)
    await audit.record(state(request).pool, action="auth.logout", actor_id=session.user_id, project_id=None,
                       target_type="admin_user", target_id=session.user_id, ip=client_ip(request))


@get("/v1/auth/me")
async def me(request: Request[Any, Any, Any]) -> User:
    """The signed-in user."""
    session = await current_session(request)
    row = await state(request).pool.fetchrow(
        "SELECT id, email, name, created_at FROM admin_users WHERE id = $1", session.user_id)
    if row is None:
        raise Problem(401, "account no longer exists")
    return msgspec.convert(dict(row), User)


async def current_session(request: Request[Any, Any, Any], project_id: uuid.UUID | None = None) -> sessions.Session:
    """The admin session of this request, with the role in `project_id` (401 without one; unknown tokens are
    counted per client, see `router.access.session`)."""
    credential = presented(request.headers.get("authorization"))
    if credential is None or credential.kind != "session":
        raise Problem(401, "send an admin session token as Authorization: Bearer")
    st = state(request)
    return await access.session(st, credential.token, project_id, access.client_ip(st, request.scope))


def _account(email: str) -> tuple[str, str]:
    """A limiter identity for an email address that does not put the address in Redis."""
    return ("account", hashlib.sha256(email.lower().encode()).hexdigest()[:24])


ROUTES = [signup, login, logout, me]
