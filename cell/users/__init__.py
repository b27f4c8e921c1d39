"""End users: the people using a customer's app, upserted on (project, external id).

Their `traits` are whatever the customer's page sends about them, so they pass through the project's
privacy rules (scope `context`) before they are stored; `end_users.privacy_scope` adds up what was
redacted (rule and counts, never the values).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from cell.privacy import scrub
from common.ids import uuid7

TRAITS_SCOPE = "context"
"""Traits describe the person and their account, like the technical context describes their device."""


class EndUserIn(msgspec.Struct, forbid_unknown_fields=False):
    """`user` as SDKs send it with any ingest call."""

    external_id: str
    email: str | None = None
    name: str | None = None
    avatar_url: str | None = None
    traits: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.external_id) <= 255:
            raise ValueError("external_id must be 1 to 255 characters")
        if self.email is not None and len(self.email) > 255:
            raise ValueError("email is longer than 255 characters")
        if self.name is not None and len(self.name) > 255:
            raise ValueError("name is longer than 255 characters")


def _scrubbed_traits(rules: scrub.Rules, user: EndUserIn) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The user's traits as they may be stored, and the redaction report (None when nothing was redacted)."""
    if not user.traits:
        return user.traits, None
    report = scrub.Report()
    traits: dict[str, Any] = scrub.scrub_value(rules, user.traits, TRAITS_SCOPE, report)
    return traits, report.as_json() if report else None


async def add_redactions(conn: asyncpg.Connection, found: list[tuple[uuid.UUID, uuid.UUID, dict[str, Any]]]) -> None:
    """Add redaction reports to end users' records: (project id, end user id, `Report.as_json()`)."""
    await conn.executemany(
        """UPDATE end_users SET privacy_scope = relay_merge_redactions(privacy_scope, $3)
            WHERE project_id = $1 AND id = $2""", found)


async def upsert(conn: asyncpg.Connection, project_id: uuid.UUID, user: EndUserIn, rules: scrub.Rules) -> uuid.UUID:
    """The end user's id, creating or refreshing the row; fields not sent are kept, traits are scrubbed."""
    traits, redactions = _scrubbed_traits(rules, user)
    row_id: uuid.UUID = await conn.fetchval(
        """INSERT INTO end_users (id, project_id, external_user_id, email, name, avatar_url, traits)
           VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, '{}'::jsonb))
           ON CONFLICT (project_id, external_user_id) DO UPDATE SET
               email = coalesce(EXCLUDED.email, end_users.email),
               name = coalesce(EXCLUDED.name, end_users.name),
               avatar_url = coalesce(EXCLUDED.avatar_url, end_users.avatar_url),
               traits = end_users.traits || coalesce($7, '{}'::jsonb),
               updated_at = now()
           RETURNING id""",
        uuid7(), project_id, user.external_id, user.email, user.name, user.avatar_url, traits,
    )
    if redactions is not None:
        await add_redactions(conn, [(project_id, row_id, redactions)])
    return row_id


async def upsert_many(conn: asyncpg.Connection, users: list[tuple[uuid.UUID, EndUserIn]],
                      rules: Mapping[uuid.UUID, scrub.Rules]) -> dict[tuple[uuid.UUID, str], uuid.UUID]:
    """`upsert` for many (project_id, user) at once, in one statement: (project_id, external_id) → id.

    `rules` holds the privacy rules of every project in `users`.

    A user sent twice is merged first as if upserted twice in turn (later fields win, traits are merged), and
    rows are locked in (project, external id) order, so concurrent batches cannot deadlock on them.
    """
    merged: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
    found: list[tuple[uuid.UUID, str, dict[str, Any]]] = []
    for project_id, user in users:
        traits, redactions = _scrubbed_traits(rules[project_id], user)
        if redactions is not None:
            found.append((project_id, user.external_id, redactions))
        entry = merged.setdefault((project_id, user.external_id), {
            "id": uuid7(), "project_id": project_id, "external_user_id": user.external_id,
            "email": None, "name": None, "avatar_url": None, "traits": None})
        for field in ("email", "name", "avatar_url"):
            if getattr(user, field) is not None:
                entry[field] = getattr(user, field)
        if traits is not None:
            entry["traits"] = {**(entry["traits"] or {}), **traits}
    rows = await conn.fetch(
        """INSERT INTO end_users (id, project_id, external_user_id, email, name, avatar_url, traits)
           SELECT id, project_id, external_user_id, email, name, avatar_url, coalesce(traits, '{}'::jsonb)
             FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, project_id uuid, external_user_id text, email text,
                                                      name text, avatar_url text, traits jsonb)
            ORDER BY project_id, external_user_id
           ON CONFLICT (project_id, external_user_id) DO UPDATE SET
               email = coalesce(EXCLUDED.email, end_users.email),
               name = coalesce(EXCLUDED.name, end_users.name),
               avatar_url = coalesce(EXCLUDED.avatar_url, end_users.avatar_url),
               traits = end_users.traits || EXCLUDED.traits,
               updated_at = now()
           RETURNING id, project_id, external_user_id""",
        list(merged.values()),
    )
    ids = {(r["project_id"], r["external_user_id"]): r["id"] for r in rows}
    if found:
        await add_redactions(conn, [(pid, ids[(pid, external_id)], report) for pid, external_id, report in found])
    return ids


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
