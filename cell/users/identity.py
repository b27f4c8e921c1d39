"""Identity verification: whether a `user` sent with an ingest call is who it says it is.

A project may hold an identity secret (`ris_…`, shown once, sealed at rest).
The customer's server computes `user_hash = hex(HMAC-SHA256(secret,
external_id))` and the page sends it inside `user`, as with Intercom and
Chatwoot. Without a valid hash a `user` is a claim anybody holding the
public ingest key could make, so `cell.users.upsert_many` lets it create an
end user but never change a stored one; with `identity_verification =
"required"` in the project's settings it is refused (401).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

import asyncpg

from cell.secrets import SecretError, seal, unseal
from cell.secrets import reseal as reseal_one
from common.problems import Problem

PURPOSE = "identity-secret"
PREFIX = "ris_"
MAX_HASH = 128


@dataclass(frozen=True, slots=True)
class Policy:
    """What a project decided about identities: its sealed secret (None: it verifies nobody) and the mode."""

    sealed: str | None
    required: bool


def new_secret() -> str:
    """A fresh identity secret: `ris_` and 43 url-safe characters (256 bits)."""
    return PREFIX + secrets.token_urlsafe(32)


def user_hash(secret: str, external_id: str) -> str:
    """What the customer's server sends for an end user: hex HMAC-SHA256 of the external id under the secret."""
    return hmac.new(secret.encode(), external_id.encode(), hashlib.sha256).hexdigest()


async def policy(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID) -> Policy:
    """The project's identity secret (sealed) and whether verification is required."""
    row = await conn.fetchrow(
        """SELECT identity_secret, settings->>'identity_verification' = 'required' AS required
             FROM projects WHERE id = $1""", project_id)
    if row is None:
        return Policy(None, False)
    return Policy(row["identity_secret"], bool(row["required"]))


def verified(secret_key: str, project_id: uuid.UUID, rules: Policy, external_id: str, presented: str | None) -> bool:
    """Whether `presented` is the valid hash of `external_id` under the project's secret (constant time)."""
    if rules.sealed is None or not presented or len(presented) > MAX_HASH:
        return False
    try:
        secret = unseal(secret_key, project_id, PURPOSE, rules.sealed)
    except SecretError:
        return False  # a secret this cell cannot open proves nobody; rotating it mends that
    return hmac.compare_digest(user_hash(secret, external_id), presented.strip().lower())


def refuse() -> Problem:
    """The answer to an unverified `user` where the project requires verification."""
    return Problem(401, "this project requires identity verification: send user.user_hash, the hex "
                        "HMAC-SHA256 of user.external_id under the project's identity secret")


async def rotate(conn: asyncpg.Connection, secret_key: str, project_id: uuid.UUID) -> str | None:
    """Give the project a new identity secret (the old one stops verifying); the secret, None if no project."""
    secret = new_secret()
    done = await conn.fetchval(
        "UPDATE projects SET identity_secret = $2, updated_at = now() WHERE id = $1 RETURNING true",
        project_id, seal(secret_key, project_id, PURPOSE, secret))
    return secret if done else None


async def reseal(pool: asyncpg.Pool, secret_key: str) -> int:
    """Seal every project's identity secret again with the key ring's newest key (`relay secrets rotate`); the
    number changed. Without it, dropping the old key from the ring would silently stop verifying anybody."""
    changed = 0
    for row in await pool.fetch("SELECT id, identity_secret FROM projects WHERE identity_secret IS NOT NULL"):
        again = reseal_one(secret_key, row["id"], PURPOSE, row["identity_secret"])
        if again is not None:
            await pool.execute("UPDATE projects SET identity_secret = $2 WHERE id = $1 AND identity_secret = $3",
                               row["id"], again, row["identity_secret"])
            changed += 1
    return changed
