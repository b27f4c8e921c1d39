"""A project's own secret: the HMAC key of its conversation tokens and of its sessions' `ip_hash`.

Sealed at rest with the cell's key ring (cell/secrets.py, purpose `project:secret`) like integration
tokens and webhook secrets: a dump of `projects` shows no key that would let someone mint conversation
tokens or reverse `ip_hash` by enumerating addresses. Rows from before migration 0017 hold it in plain
`secret`; `seal_plain` seals them (the cell runs it at start), and `reseal` moves every sealed one to the
ring's newest key (`relay secrets rotate`). A move between regions opens it in the source and seals it
again in the target, like every value in cell/sealed.py.
"""

from __future__ import annotations

import base64
import secrets as random
import uuid

import asyncpg

from cell import secrets

PURPOSE = "project:secret"
SIZE = 32


def new_sealed(secret_key: str, project_id: uuid.UUID) -> str:
    """A fresh random secret for a new project, in its stored (sealed) form."""
    return seal(secret_key, project_id, random.token_bytes(SIZE))


def seal(secret_key: str, project_id: uuid.UUID, secret: bytes) -> str:
    """The stored form of a project's secret."""
    return secrets.seal(secret_key, project_id, PURPOSE, base64.b64encode(secret).decode())


async def project_secret(conn: asyncpg.Connection | asyncpg.Pool, secret_key: str,
                         project_id: uuid.UUID) -> bytes | None:
    """The project's secret (None for a project not here); a plain one from before 0017 is used as it is."""
    row = await conn.fetchrow("SELECT secret, sealed_secret FROM projects WHERE id = $1", project_id)
    if row is None:
        return None
    if row["sealed_secret"] is not None:
        return base64.b64decode(secrets.unseal(secret_key, project_id, PURPOSE, row["sealed_secret"]))
    plain: bytes | None = row["secret"]
    return plain


async def seal_plain(pool: asyncpg.Pool, secret_key: str, project_id: uuid.UUID | None = None) -> int:
    """Seal every plain project secret (or one project's); the number sealed.

    Each row is sealed on its own and only if still plain, so processes starting together do not race,
    and a project whose writes are fenced by a move is left for the next run.
    """
    rows = await pool.fetch(
        "SELECT id, secret FROM projects WHERE secret IS NOT NULL AND ($1::uuid IS NULL OR id = $1)", project_id)
    sealed = 0
    for row in rows:
        try:
            status = await pool.execute(
                "UPDATE projects SET sealed_secret = $2, secret = NULL WHERE id = $1 AND secret = $3",
                row["id"], seal(secret_key, row["id"], bytes(row["secret"])), row["secret"])
        except asyncpg.PostgresError:  # fenced by a move (RL503) or gone: sealed at the next run
            continue
        sealed += status.endswith(" 1")
    return sealed


async def reseal(pool: asyncpg.Pool, secret_key: str) -> int:
    """Seal every project secret again with the key ring's newest key; the number changed."""
    changed = 0
    for row in await pool.fetch("SELECT id, sealed_secret FROM projects WHERE sealed_secret IS NOT NULL"):
        again = secrets.reseal(secret_key, row["id"], PURPOSE, row["sealed_secret"])
        if again is not None:
            await pool.execute("UPDATE projects SET sealed_secret = $2 WHERE id = $1 AND sealed_secret = $3",
                               row["id"], again, row["sealed_secret"])
            changed += 1
    return changed


async def seal_in(conn: asyncpg.Connection, secret_key: str, project_id: uuid.UUID) -> None:
    """Seal the project's plain secret in the caller's transaction (a move's import, on the target, of a source
    row still plain from before 0017; a sealed one travels as every sealed value does, cell/sealed.py)."""
    plain = await conn.fetchval("SELECT secret FROM projects WHERE id = $1", project_id)
    if plain is not None:
        await conn.execute("UPDATE projects SET sealed_secret = $2, secret = NULL WHERE id = $1",
                           project_id, seal(secret_key, project_id, bytes(plain)))
