"""Invitation tokens and the email that carries them.

A token is `rinv_` and 43 url-safe characters (256 bits); only its SHA-256 is
stored. It lasts `TTL`, is used once, and is sent only to the invited address,
so accepting it proves the account holds that mailbox (signup alone never
proves an address).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from common.ids import uuid7
from common.keys import fingerprint

log = logging.getLogger("relay.router.members")

TTL = timedelta(days=7)
PREFIX = "rinv_"

COLUMNS = "id, email, role::text AS role, project_id, invited_by, created_at, expires_at"


def new_token() -> str:
    """A fresh one-time invitation token."""
    return PREFIX + secrets.token_urlsafe(32)


async def replace(conn: asyncpg.Connection, project_id: uuid.UUID, email: str, role: str,
                  invited_by: uuid.UUID, token: str) -> asyncpg.Record:
    """Open an invitation for `email`, revoking any open one for the same address (its link stops working)."""
    await conn.execute(
        """UPDATE project_invitations SET revoked_at = now()
            WHERE project_id = $1 AND email = $2 AND accepted_at IS NULL AND revoked_at IS NULL""",
        project_id, email)
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO project_invitations (id, project_id, email, role, token_hash, invited_by, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}""",
        uuid7(), project_id, email, role, fingerprint(token), invited_by, datetime.now(UTC) + TTL)
    return row


async def open_for_token(conn: asyncpg.Connection, token: str) -> asyncpg.Record | None:
    """The open, unexpired invitation a token names, locked until the caller's transaction ends."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {COLUMNS} FROM project_invitations
             WHERE token_hash = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()
             FOR UPDATE""", fingerprint(token))
    return row


def message(project: str, inviter: str, role: str, link: str, token: str, expires_at: datetime) -> tuple[str, str]:
    """Subject and text of the invitation email."""
    lines = [
        "Hello,", "",
        f"{inviter} invited you to join the project {project} on Relay as {role}.", "",
        "To accept, sign in to Relay with this email address and open:", link, "",
        f"Or accept through the API: POST /v1/invitations/{token}/accept", "",
        f"The link works once and expires on {expires_at.strftime('%Y-%m-%d %H:%M UTC')}.",
        "If you were not expecting it, ignore this message.", "",
    ]
    return f"You are invited to {project} on Relay", "\n".join(lines)
