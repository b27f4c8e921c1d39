"""Admin sessions: opaque `rs_` tokens, stored only as their SHA-256, expiring and revocable."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from common.ids import uuid7
from common.keys import fingerprint, new_session_token
from common.problems import Problem


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in dashboard user, and their role in the project the request names, if any."""

    user_id: uuid.UUID
    role: str | None


async def create(pool: asyncpg.Pool | asyncpg.Connection, user_id: uuid.UUID, ttl_seconds: int) -> str:
    """Open a session for the user; the token is returned once and stored hashed."""
    token = new_session_token()
    await pool.execute(
        "INSERT INTO admin_sessions (id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
        uuid7(), user_id, fingerprint(token), datetime.now(UTC) + timedelta(seconds=ttl_seconds),
    )
    return token


async def resolve(pool: asyncpg.Pool, token: str, project_id: uuid.UUID | None = None) -> Session:
    """The session behind a token (401 if none, expired or revoked), with the role in `project_id`."""
    row = await pool.fetchrow(
        """SELECT s.user_id, m.role::text AS role
             FROM admin_sessions s
             LEFT JOIN project_memberships m ON m.user_id = s.user_id AND m.project_id = $2
            WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()""",
        fingerprint(token), project_id,
    )
    if row is None:
        raise Problem(401, "session expired or invalid; log in again")
    return Session(row["user_id"], row["role"])


async def revoke(pool: asyncpg.Pool, token: str) -> None:
    """End a session (logout)."""
    await pool.execute(
        "UPDATE admin_sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
        fingerprint(token),
    )


async def end_all(conn: asyncpg.Pool | asyncpg.Connection, user_id: uuid.UUID, *, keep: str | None = None) -> int:
    """End every open session of the user but the one of token `keep` (a password changed or reset); how many."""
    status: str = await conn.execute(
        """UPDATE admin_sessions SET revoked_at = now()
            WHERE user_id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR token_hash <> $2)""",
        user_id, fingerprint(keep) if keep else None)
    return int(status.rsplit(" ", 1)[-1])


async def listed(pool: asyncpg.Pool, user_id: uuid.UUID, token: str) -> list[asyncpg.Record]:
    """The user's open sessions, newest first, marking the one of `token`."""
    return list(await pool.fetch(
        """SELECT id, created_at, expires_at, last_used_at, token_hash = $2 AS current FROM admin_sessions
            WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() ORDER BY created_at DESC, id DESC""",
        user_id, fingerprint(token)))


async def end(pool: asyncpg.Pool, user_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    """End one of the user's sessions by id; False when the user has no such open session."""
    found = await pool.fetchval(
        """UPDATE admin_sessions SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
           RETURNING id""", session_id, user_id)
    return found is not None
