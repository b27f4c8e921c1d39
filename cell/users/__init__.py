"""End users: the people using a customer's app, upserted on (project, external id) — only through
`verify` and `upsert_many`, which hold identity verification (cell/users/identity.py).

Their `traits` are whatever the customer's page sends about them, so they pass through the project's
privacy rules (scope `context`) before they are stored; `end_users.privacy_scope` adds up what was
redacted (rule and counts, never the values).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from cell.privacy import scrub
from cell.users import identity
from common.ids import uuid7

TRAITS_SCOPE = "context"
"""Traits describe the person and their account, like the technical context describes their device."""


class EndUserIn(msgspec.Struct, forbid_unknown_fields=False):
    """`user` as SDKs send it with any ingest call; `user_hash` proves it (cell.users.identity)."""

    external_id: str
    email: str | None = None
    name: str | None = None
    avatar_url: str | None = None
    traits: dict[str, Any] | None = None
    user_hash: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.external_id) <= 255:
            raise ValueError("external_id must be 1 to 255 characters")
        if self.email is not None and len(self.email) > 255:
            raise ValueError("email is longer than 255 characters")
        if self.name is not None and len(self.name) > 255:
            raise ValueError("name is longer than 255 characters")
        if self.user_hash is not None and len(self.user_hash) > identity.MAX_HASH:
            raise ValueError("user_hash is not a hex HMAC-SHA256")


@dataclass(frozen=True, slots=True)
class Claim:
    """A `user` as sent, with what the project's identity secret says of it. Made only by `verify`, so
    nothing upserts an end user without the check."""

    user: EndUserIn
    verified: bool
    """The request carried a valid `user_hash`."""
    checked: bool
    """The project has an identity secret (else nobody can be verified, and a claim is all there is)."""

    @property
    def countable(self) -> bool:
        """Whether "once per person" may count by this user: a proven one, or any where nobody can be proven."""
        return self.verified or not self.checked


@dataclass(frozen=True, slots=True)
class EndUserRef:
    """The end user a request acts as, and how far the request proved it."""

    id: uuid.UUID
    claim: Claim


async def verify(conn: asyncpg.Connection | asyncpg.Pool, secret_key: str, project_id: uuid.UUID,
                 user: EndUserIn) -> Claim:
    """Check a `user` against the project's identity secret; 401 problem when the project requires
    verification and the hash is missing or wrong."""
    rules = await identity.policy(conn, project_id)
    proven = identity.verified(secret_key, project_id, rules, user.external_id, user.user_hash)
    if rules.required and not proven:
        raise identity.refuse()
    return Claim(user, proven, rules.sealed is not None)


async def _scrubbed_traits(rules: scrub.Rules,
                           user: EndUserIn) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The user's traits as they may be stored, and the redaction report (None when nothing was redacted).

    Traits are whatever a page sends, up to the whole body: from `scrub.OFFLOAD_BYTES` on they are scrubbed on a
    worker thread, so one tenant's big traits under its custom rules never hold up the cell's event loop."""
    if not user.traits:
        return user.traits, None
    traits_in, report = user.traits, scrub.Report()

    def work() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        traits: dict[str, Any] = scrub.scrub_value(rules, traits_in, TRAITS_SCOPE, report)
        return traits, report.as_json() if report else None

    if len(msgspec.json.encode(traits_in)) < scrub.OFFLOAD_BYTES:
        return work()
    return await asyncio.to_thread(work)


async def add_redactions(conn: asyncpg.Connection, found: list[tuple[uuid.UUID, uuid.UUID, dict[str, Any]]]) -> None:
    """Add redaction reports to end users' records: (project id, end user id, `Report.as_json()`)."""
    await conn.executemany(
        """UPDATE end_users SET privacy_scope = relay_merge_redactions(privacy_scope, $3)
            WHERE project_id = $1 AND id = $2""", found)


async def upsert(conn: asyncpg.Connection, project_id: uuid.UUID, user: EndUserIn, secret_key: str,
                 rules: scrub.Rules) -> EndUserRef:
    """The end user a request acts as, created or refreshed as `upsert_many` does (verified first)."""
    claim = await verify(conn, secret_key, project_id, user)
    ids = await upsert_many(conn, [(project_id, claim)], {project_id: rules})
    return EndUserRef(ids[(project_id, user.external_id)], claim)


async def upsert_many(conn: asyncpg.Connection, claims: list[tuple[uuid.UUID, Claim]],
                      rules: Mapping[uuid.UUID, scrub.Rules]) -> dict[tuple[uuid.UUID, str], uuid.UUID]:
    """Create or refresh end users for many (project_id, claim) at once, in one statement:
    (project_id, external_id) → id. `rules` holds the privacy rules of every project in `claims`: traits are
    scrubbed before they are stored.

    This is where identity verification holds: a new end user is created from any claim (marked verified
    or not); an existing one is changed only by a verified claim (fields not sent are kept, except that the
    first verified claim replaces an email no verified claim ever set). An unverified claim never changes
    a stored email, name, avatar or traits, nor unmarks a verified user.

    A user sent twice is merged first as if upserted twice in turn (later fields win, traits are merged;
    when any of the claims is verified, only the verified ones count), and rows are locked in (project,
    external id) order, so concurrent batches cannot deadlock on them.
    """
    best: dict[tuple[uuid.UUID, str], bool] = {}
    for project_id, claim in claims:
        key = (project_id, claim.user.external_id)
        best[key] = best.get(key, False) or claim.verified
    merged: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
    found: list[tuple[uuid.UUID, str, dict[str, Any]]] = []
    for project_id, claim in claims:
        key = (project_id, claim.user.external_id)
        entry = merged.setdefault(key, {
            "id": uuid7(), "project_id": project_id, "external_user_id": claim.user.external_id,
            "email": None, "name": None, "avatar_url": None, "traits": None, "verified": best[key]})
        if claim.verified != best[key]:
            continue
        user = claim.user
        traits, redactions = await _scrubbed_traits(rules[project_id], user)
        if redactions is not None:
            found.append((project_id, user.external_id, redactions))
        for field in ("email", "name", "avatar_url"):
            if getattr(user, field) is not None:
                entry[field] = getattr(user, field)
        if traits is not None:
            entry["traits"] = {**(entry["traits"] or {}), **traits}
    rows = await conn.fetch(
        """INSERT INTO end_users (id, project_id, external_user_id, email, name, avatar_url, traits, verified)
           SELECT id, project_id, external_user_id, email, name, avatar_url, coalesce(traits, '{}'::jsonb), verified
             FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, project_id uuid, external_user_id text, email text,
                                                      name text, avatar_url text, traits jsonb, verified boolean)
            ORDER BY project_id, external_user_id
           ON CONFLICT (project_id, external_user_id) DO UPDATE SET
               email = CASE WHEN NOT EXCLUDED.verified THEN end_users.email
                            WHEN end_users.verified THEN coalesce(EXCLUDED.email, end_users.email)
                            ELSE EXCLUDED.email END,
               name = CASE WHEN EXCLUDED.verified THEN coalesce(EXCLUDED.name, end_users.name)
                           ELSE end_users.name END,
               avatar_url = CASE WHEN EXCLUDED.verified THEN coalesce(EXCLUDED.avatar_url, end_users.avatar_url)
                                 ELSE end_users.avatar_url END,
               traits = CASE WHEN EXCLUDED.verified THEN end_users.traits || EXCLUDED.traits
                             ELSE end_users.traits END,
               verified = end_users.verified OR EXCLUDED.verified,
               updated_at = now()
           RETURNING id, project_id, external_user_id""",
        list(merged.values()),
    )
    ids = {(r["project_id"], r["external_user_id"]): r["id"] for r in rows}
    if found:
        await add_redactions(conn, [(pid, ids[(pid, external_id)], report) for pid, external_id, report in found])
    return ids


async def countable(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Whether "once per person" may count by a stored end user: verified, or the project verifies nobody."""
    found: bool | None = await conn.fetchval(
        """SELECT e.verified OR p.identity_secret IS NULL
             FROM end_users e JOIN projects p ON p.id = e.project_id WHERE e.project_id = $1 AND e.id = $2""",
        project_id, user_id)
    return bool(found)


@dataclass(frozen=True)
class Footprint:
    """The ids of every row that is about one end user: what erasure deletes and export returns."""

    user_id: uuid.UUID
    session_ids: list[uuid.UUID]
    interaction_ids: list[uuid.UUID]
    conversation_ids: list[uuid.UUID]
    replay_ids: list[uuid.UUID]


async def footprint(conn: asyncpg.Connection, project_id: uuid.UUID, user_id: uuid.UUID, *,
                    lock: bool = False) -> Footprint | None:
    """Everything of the person's, found by identity or by session: None when there is no such end user.

    Interactions and conversations made in one of their sessions belong to them even without `user_id`
    (an SDK may identify the user only later), and so do the replays of their sessions and those attached
    to their interactions. With `lock`, the rows are locked in the order ingest locks them (user, then
    sessions), so nothing new can attach to them until the caller's transaction ends.
    """
    for_update = " FOR UPDATE" if lock else ""
    found = await conn.fetchval(
        f"SELECT id FROM end_users WHERE project_id = $1 AND id = $2{for_update}", project_id, user_id)
    if found is None:
        return None
    sessions = [r[0] for r in await conn.fetch(
        f"SELECT id FROM sessions WHERE project_id = $1 AND user_id = $2 ORDER BY id{for_update}",
        project_id, user_id)]
    theirs = "project_id = $1 AND (user_id = $2 OR session_id = ANY($3::uuid[]))"
    interactions = [r[0] for r in await conn.fetch(
        f"SELECT id FROM interactions WHERE {theirs} ORDER BY id{for_update}", project_id, user_id, sessions)]
    conversations = [r[0] for r in await conn.fetch(
        f"SELECT id FROM conversations WHERE {theirs} ORDER BY id{for_update}", project_id, user_id, sessions)]
    replays = [r[0] for r in await conn.fetch(
        f"""SELECT id FROM replays WHERE project_id = $1
               AND (session_id = ANY($2::uuid[]) OR interaction_id = ANY($3::uuid[])) ORDER BY id{for_update}""",
        project_id, sessions, interactions)]
    return Footprint(user_id, sessions, interactions, conversations, replays)
