"""Creating, listing and revoking API keys.

The router reserves the prefix in its key directory (so prefixes are unique across
regions) and then asks the cell to mint the key: the secret is generated here,
returned once, and only its keyed digest is kept (`common.keys.digest`; the
router keeps its own from the key it relays). A key from before digests is
verified here once for the router (`verify_key`), which upgrades its bcrypt hash.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import msgspec
from litestar import Request, Response, delete, get, post

from cell import audit
from cell.auth import ADMIN, require
from cell.context import caller, ctx
from cell.paging import Page
from common.keys import PREFIX_RE, digest, new_key
from common.problems import Problem

Scope = Literal["ingest", "read", "write", "admin"]


class KeyIn(msgspec.Struct, kw_only=True):
    """What the router asks the cell to mint."""

    id: uuid.UUID
    key_prefix: str
    name: str
    scopes: list[Scope]
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if not PREFIX_RE.match(self.key_prefix):
            raise ValueError("malformed key prefix - at `$.key_prefix`")
        if not 1 <= len(self.name) <= 200:
            raise ValueError("name must be 1 to 200 characters - at `$.name`")
        if not self.scopes:
            raise ValueError("at least one scope - at `$.scopes`")
        if self.expires_at is not None:
            if self.expires_at.tzinfo is None:
                raise ValueError("expires_at needs a time zone - at `$.expires_at`")
            if self.expires_at <= datetime.now(UTC):
                raise ValueError("expires_at is in the past - at `$.expires_at`")


class KeyOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A key as listed; `key` is present only in the creation response."""

    id: uuid.UUID
    name: str
    key_prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    key: str | None = None


_COLUMNS = "id, name, key_prefix, scopes, created_at, expires_at, last_used_at, revoked_at"


@post("/internal/projects/{project_id:uuid}/api-keys", status_code=201)
async def create_key(request: Request[Any, Any, Any], project_id: uuid.UUID, data: KeyIn) -> Response[KeyOut]:
    """Mint the key; 200 without the secret if this id already exists (a retried call)."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    key = new_key(data.key_prefix)
    context = ctx(request)
    stored = digest(context.settings.key_pepper.encode(), key)
    async with context.pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                f"""INSERT INTO api_keys (id, project_id, key_digest, key_prefix, name, scopes, expires_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING {_COLUMNS}""",
                data.id, project_id, stored, data.key_prefix, data.name, sorted(set(data.scopes)), data.expires_at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Problem(409, "key prefix already in use") from exc
        if row is None:
            existing = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1 AND project_id = $2", data.id, project_id)
            if existing is None:
                raise Problem(409, "key id already in use")
            return Response(msgspec.convert(dict(existing), KeyOut), status_code=200)
        await audit.record(conn, principal, "api_key.created", "api_key", data.id,
                           {"key_prefix": data.key_prefix, "scopes": sorted(set(data.scopes))})
    out = msgspec.convert(dict(row), KeyOut)
    out.key = key
    return Response(out, status_code=201)


@get("/v1/projects/{project_id:uuid}/api-keys")
async def list_keys(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Page[KeyOut]:
    """Every key of the project, revoked ones included, never the secret."""
    require(await caller(request, project_id), project_id, level=ADMIN)
    rows = await ctx(request).pool.fetch(
        f"SELECT {_COLUMNS} FROM api_keys WHERE project_id = $1 ORDER BY created_at DESC, id DESC", project_id)
    return Page([msgspec.convert(dict(r), KeyOut) for r in rows], None)


@delete("/internal/projects/{project_id:uuid}/api-keys/{key_id:uuid}", status_code=200)
async def revoke_key(request: Request[Any, Any, Any], project_id: uuid.UUID, key_id: uuid.UUID,
                     discard: bool = False) -> KeyOut:
    """Revoke a key (idempotent). `discard` removes a key whose creation never reached its caller."""
    principal = require(await caller(request, project_id), project_id, level=ADMIN)
    context = ctx(request)
    async with context.pool.acquire() as conn, conn.transaction():
        if discard:
            row = await conn.fetchrow(
                f"DELETE FROM api_keys WHERE project_id = $1 AND id = $2 RETURNING {_COLUMNS}", project_id, key_id)
        else:
            row = await conn.fetchrow(
                f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
                    WHERE project_id = $1 AND id = $2 RETURNING {_COLUMNS}""", project_id, key_id)
        if row is None:
            raise Problem(404, "no such key")
        await audit.record(conn, principal, "api_key.discarded" if discard else "api_key.revoked",
                           "api_key", key_id, {"key_prefix": row["key_prefix"]})
    context.auth.keys.forget(key_id)
    return msgspec.convert(dict(row), KeyOut)


class VerifyIn(msgspec.Struct):
    """A key the router holds no digest for yet."""

    key: str


@post("/internal/projects/{project_id:uuid}/api-keys/verify", status_code=200)
async def verify_key(request: Request[Any, Any, Any], project_id: uuid.UUID, data: VerifyIn) -> KeyOut:
    """Whether `key` is a live key of the project: its record (never the secret), or 401. For the router only,
    for keys created before it kept digests: it records the key's digest only after this accepted it, and the
    check itself upgrades the key's bcrypt hash here."""
    require(await caller(request, project_id), project_id, level=ADMIN)
    context = ctx(request)
    try:
        record = await context.auth.keys.verify(data.key)
    except Problem as problem:
        if problem.status == 421:  # not a key of this cell at all
            raise Problem(401, "invalid or revoked API key") from None
        raise
    if record.project_id != project_id:
        raise Problem(404, "no such key")
    row = await context.pool.fetchrow(
        f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1 AND project_id = $2", record.key_id, project_id)
    if row is None:
        raise Problem(404, "no such key")
    return msgspec.convert(dict(row), KeyOut)


ROUTES = [create_key, list_keys, revoke_key, verify_key]
