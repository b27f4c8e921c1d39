"""What a feedback item counts once people confirm duplicate groups: its interactions and its demand.

A person's merge says several reports are one problem (cell/interactions/groups.py); a feedback item tracks a
problem through the interactions linked to it. So an item follows the confirmed groups of its interactions,
as Canny or Featurebase add a merged post's people to the post it was merged into:

- **Reached interactions.** An item reaches the interactions linked to it (`feedback_links`) and, for each
  linked interaction a person confirmed (`duplicate_confirmed`), every other confirmed member of its group
  (`ai_duplicate_group_id`): the same members close-the-loop notifications reach
  (cell/notifications/recipients.py). A group the workers formed on their own is a guess and reaches nothing.
  `linked_interaction_count` is the number of distinct interactions an item reaches, so one interaction
  counts once however many of its group's members are linked.
- **Demand.** The end users who reported a reached, confirmed interaction (its `user_id`) want what the item
  tracks: each counts as one vote on it (a `feedback_votes` row with `from_group`, no session), unless they
  voted for the item themselves, whose own vote counts instead; at most one such vote per end user and item,
  however many of the group's reports are theirs. A report nobody confirmed as a duplicate adds no vote
  (linking one interaction counts the link, as before), and an item's voters are not moved to another item:
  interactions are merged, items stay apart, and a vote is a person's choice of one item on the board.
- **Undo.** Both derive from what is stored now (links, groups, confirmations, votes), never from the history
  of merges: an unmerge, an unlink, a withdrawn vote or an erasure takes back exactly what it no longer
  justifies, and a merge repeated, or undone and redone, ends where it was. Group votes fire no `vote.created`
  webhook: nobody voted.

Exactness under concurrency: every change of links or groups (merge, unmerge, link, unlink, erasure,
retention) holds the project's grouping lock (`lock_project`, which the workers hold while they group), so
the set of items a change touches cannot move while it is computed; `sync` then locks those items' rows, and
only afterwards, in new statements, reads what they reach and writes the difference. A vote or an un-vote
locks its item's row before it looks at group demand (cell/feedback/queries.py), so either it sees a
concurrent merge's groups or the merge's `sync` sees its vote. The counters change with the rows they count,
in the caller's transaction.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass

import asyncpg

from common.ids import uuid7

REACHED = """
    SELECT l.project_id, l.feedback_item_id, i.id AS interaction_id, i.user_id, i.duplicate_confirmed AS confirmed
      FROM feedback_links l
      JOIN interactions i ON i.project_id = l.project_id AND i.id = l.interaction_id
    UNION
    SELECT l.project_id, l.feedback_item_id, m.id, m.user_id, true
      FROM feedback_links l
      JOIN interactions i ON i.project_id = l.project_id AND i.id = l.interaction_id AND i.duplicate_confirmed
      JOIN interactions m ON m.project_id = l.project_id AND m.ai_duplicate_group_id = i.ai_duplicate_group_id
                         AND m.duplicate_confirmed"""
"""One row per (item, interaction it reaches), with the interaction's reporter and whether a person confirmed it
(a linked interaction appears once whether it is reached by its link, its group or both). Columns: project_id,
feedback_item_id, interaction_id, user_id, confirmed. Shared with the counters' reconciliation
(cell/maintenance/counters.py), so the job repairs toward the same definition."""


@dataclass(frozen=True)
class Moved:
    """What `sync` changed on one item: its counters after, and the group votes it added and took back."""

    feedback_item_id: uuid.UUID
    linked_interaction_count: int
    vote_count: int
    votes_added: int
    votes_removed: int

    def as_json(self) -> dict[str, object]:
        """The change as an audit entry's meta holds it."""
        return {"feedback_item_id": str(self.feedback_item_id),
                "linked_interaction_count": self.linked_interaction_count, "vote_count": self.vote_count,
                "votes_added": self.votes_added, "votes_removed": self.votes_removed}


async def items_reaching(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_ids: list[uuid.UUID],
                         groups: list[str]) -> list[uuid.UUID]:
    """Items linked to any of these interactions or to any member of these groups: every item whose reach a
    change of them can alter (a superset; `sync` leaves the others as they are). Read under the grouping lock."""
    rows = await conn.fetch(
        """SELECT DISTINCT l.feedback_item_id FROM feedback_links l
             JOIN interactions i ON i.project_id = l.project_id AND i.id = l.interaction_id
            WHERE l.project_id = $1 AND (i.id = ANY($2::uuid[]) OR i.ai_duplicate_group_id = ANY($3::text[]))
            ORDER BY 1""", project_id, interaction_ids, groups)
    return [r[0] for r in rows]


async def sync(conn: asyncpg.Connection, project_id: uuid.UUID, item_ids: list[uuid.UUID]) -> list[Moved]:
    """Bring these items' `linked_interaction_count` and group votes to what their links and groups justify now;
    the items that changed. The caller holds the grouping lock; the items' rows are locked here (in id order,
    so two callers never deadlock), and what they reach is read only afterwards."""
    ids = sorted(set(item_ids))
    if not ids:
        return []
    ids = [r[0] for r in await conn.fetch(
        """SELECT id FROM feedback_items WHERE project_id = $1 AND id = ANY($2::uuid[]) ORDER BY id
           FOR NO KEY UPDATE""", project_id, ids)]
    if not ids:
        return []
    # The end users who voted themselves are read once and joined (a correlated lookup per reached interaction
    # would scan the item's votes again for each).
    reached = await conn.fetch(
        f"""WITH own AS (SELECT DISTINCT feedback_item_id, user_id FROM feedback_votes
                          WHERE project_id = $1 AND feedback_item_id = ANY($2::uuid[]) AND NOT from_group
                            AND user_id IS NOT NULL)
            SELECT r.feedback_item_id, count(*) AS linked,
                   coalesce(array_agg(DISTINCT r.user_id) FILTER (
                       WHERE r.confirmed AND r.user_id IS NOT NULL AND o.user_id IS NULL), '{{}}') AS wanted
              FROM ({REACHED}) r
              LEFT JOIN own o ON o.feedback_item_id = r.feedback_item_id AND o.user_id = r.user_id
             WHERE r.project_id = $1 AND r.feedback_item_id = ANY($2::uuid[])
             GROUP BY r.feedback_item_id""", project_id, ids)
    linked = {r["feedback_item_id"]: r["linked"] for r in reached}
    wanted = {(r["feedback_item_id"], u) for r in reached for u in r["wanted"]}
    held = {(r[0], r[1]) for r in await conn.fetch(
        """SELECT feedback_item_id, user_id FROM feedback_votes
            WHERE project_id = $1 AND feedback_item_id = ANY($2::uuid[]) AND from_group""", project_id, ids)}
    extra, missing = sorted(held - wanted), sorted(wanted - held)
    removed = Counter(r[0] for r in await conn.fetch(
        """DELETE FROM feedback_votes v USING unnest($2::uuid[], $3::uuid[]) AS d(item, user_id)
            WHERE v.project_id = $1 AND v.feedback_item_id = d.item AND v.user_id = d.user_id AND v.from_group
           RETURNING v.feedback_item_id""", project_id, [e[0] for e in extra], [e[1] for e in extra]))
    added = Counter(r[0] for r in await conn.fetch(
        """INSERT INTO feedback_votes (id, project_id, feedback_item_id, user_id, session_id, from_group)
           SELECT d.id, $1, d.item, d.user_id, NULL, true
             FROM unnest($2::uuid[], $3::uuid[], $4::uuid[]) AS d(id, item, user_id)
           ON CONFLICT DO NOTHING RETURNING feedback_item_id""",
        project_id, [uuid7() for _ in missing], [m[0] for m in missing], [m[1] for m in missing]))
    rows = await conn.fetch(
        """UPDATE feedback_items f SET vote_count = f.vote_count + d.delta, linked_interaction_count = d.linked
             FROM unnest($2::uuid[], $3::int[], $4::int[]) AS d(id, delta, linked)
            WHERE f.project_id = $1 AND f.id = d.id AND (d.delta <> 0 OR f.linked_interaction_count <> d.linked)
           RETURNING f.id, f.vote_count, f.linked_interaction_count""",
        project_id, ids, [added[i] - removed[i] for i in ids], [linked.get(i, 0) for i in ids])
    return [Moved(r["id"], r["linked_interaction_count"], r["vote_count"], added[r["id"]], removed[r["id"]])
            for r in sorted(rows, key=lambda r: r["id"])]


async def wants(conn: asyncpg.Connection, project_id: uuid.UUID, item_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Whether the end user reported an interaction the item reaches through a confirmed group (their demand
    on it, with or without a vote of their own). The caller holds the item's row lock."""
    found: bool = await conn.fetchval(
        f"""SELECT EXISTS (SELECT 1 FROM ({REACHED}) r
                            WHERE r.project_id = $1 AND r.feedback_item_id = $2 AND r.user_id = $3
                              AND r.confirmed)""", project_id, item_id, user_id)
    return found
