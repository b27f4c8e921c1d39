"""Who hears that a linked issue closed: the people behind an interaction and its duplicate group.

For the interaction and, when a person confirmed its duplicate group (`duplicate_confirmed`), every
other confirmed member of its `ai_duplicate_group_id` group (a group the workers formed on their own is a
guess: it never emails anyone beyond the interaction itself):
its reporter (the end user who sent it), the voters of the feedback items it
is linked to, and, for a chat, the end user of the conversation. Only people with a
usable email address, and once the project has an identity secret only verified
end users (an address anybody with the ingest key could have typed gets
nothing); one entry per address (lower-cased), with the closest role
(reporter, then chat, then voter) deciding how the email reads.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

Role = Literal["reporter", "chat", "voter"]

MAX_GROUP = 500
"""Group members considered: a runaway group must not turn one closed issue into a mass mailing."""
MAX_RECIPIENTS = 500

_ADDRESS = re.compile(r"^[^@\s<>,;:\"()\[\]\\]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


def usable(address: str) -> bool:
    """Whether an address end users typed (not validated at ingest) is safe to put in an envelope and a header."""
    return len(address) <= 254 and _ADDRESS.match(address) is not None


@dataclass(frozen=True, slots=True)
class Recipient:
    """One person to email; the address stays out of reprs so it cannot reach a log line by accident."""

    user_id: uuid.UUID
    email: str = field(repr=False)
    role: Role


async def for_interaction(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
                          interaction_id: uuid.UUID) -> list[Recipient]:
    """Everyone to tell about the interaction's closed issue, deduplicated by address."""
    members = await conn.fetch(
        """SELECT i.id, i.type::text AS type, i.user_id, i.content_json->>'conversation_id' AS conversation_id
             FROM interactions i
             JOIN interactions one ON one.project_id = i.project_id AND one.id = $2
            WHERE i.project_id = $1
              AND (i.id = one.id OR (one.duplicate_confirmed AND i.duplicate_confirmed
                                     AND i.ai_duplicate_group_id = one.ai_duplicate_group_id))
            ORDER BY i.id = one.id DESC, i.created_at LIMIT $3""", project_id, interaction_id, MAX_GROUP)
    if not members:
        return []
    reporters = [m["user_id"] for m in members if m["user_id"] is not None and m["type"] != "chat"]
    chatters = [m["user_id"] for m in members if m["user_id"] is not None and m["type"] == "chat"]
    conversations = []
    for m in members:
        if m["type"] == "chat" and m["conversation_id"]:
            try:
                conversations.append(uuid.UUID(m["conversation_id"]))
            except ValueError:
                continue  # content sent through the generic ingest, not a conversation of ours
    rows = await conn.fetch(
        """SELECT DISTINCT ON (lower(btrim(e.email))) e.id, btrim(e.email) AS email, p.role
             FROM (SELECT unnest($2::uuid[]) AS user_id, 1 AS rank, 'reporter' AS role
                   UNION ALL
                   SELECT unnest($5::uuid[]), 2, 'chat'
                   UNION ALL
                   SELECT c.user_id, 2, 'chat' FROM conversations c
                    WHERE c.project_id = $1 AND c.id = ANY($3::uuid[]) AND c.user_id IS NOT NULL
                   UNION ALL
                   SELECT v.user_id, 3, 'voter' FROM feedback_links l
                     JOIN feedback_votes v ON v.project_id = l.project_id AND v.feedback_item_id = l.feedback_item_id
                    WHERE l.project_id = $1 AND l.interaction_id = ANY($4::uuid[]) AND v.user_id IS NOT NULL) p
             JOIN end_users e ON e.project_id = $1 AND e.id = p.user_id
             JOIN projects pr ON pr.id = $1
            WHERE e.email IS NOT NULL AND (e.verified OR pr.identity_secret IS NULL)
            ORDER BY lower(btrim(e.email)), p.rank, e.id""",
        project_id, reporters, conversations, [m["id"] for m in members], chatters)
    found = [Recipient(r["id"], r["email"], r["role"]) for r in rows if usable(r["email"])]
    return found[:MAX_RECIPIENTS]
