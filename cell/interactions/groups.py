"""Duplicate groups as people decide them: merge, unmerge, and the pairs they said are not duplicates.

A group is the set of a project's interactions sharing `ai_duplicate_group_id` (an interaction alone is a
group named after itself). The workers join a new interaction to a group only above a calibrated
confidence (cell/enrichment/grouping.py); a person merges and splits groups here, and marks what they
merged with `duplicate_confirmed`. Close-the-loop notifications reach only the confirmed members of a
group (cell/notifications/recipients.py): a machine's guess never emails a stranger.

Every change takes the project's grouping lock (the one the enrichment job holds while it decides), so a
person's merge and a worker's decision never interleave, and mirrors the group onto the enrichment
signatures the workers compare with. A dismissed pair (`duplicate_dismissals`) is never suggested again
and never put in one group by a worker (`conflicts`); a person's merge of the pair lifts it. Only a person
joins two groups a person confirmed: a worker never merges them (`conflicts` again).

Feedback items follow confirmed groups (cell/feedback/demand.py): a merge or an unmerge recounts, in its
own transaction, every item linked to a member of the groups it touched, so `linked_interaction_count`
and the group's reporters' votes move with the group, and an unmerge takes them back. `Change.moved` says
which items changed, for the audit entry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from cell.enrichment.queries import lock_project
from cell.feedback import demand
from common.problems import Problem


@dataclass(frozen=True)
class Change:
    """What a merge or an unmerge did: whether anything changed, the groups involved, and the feedback items
    whose counts moved with them."""

    changed: bool
    group_id: str
    before: tuple[str, ...] = ()
    moved: list[demand.Moved] = field(default_factory=list)


def _group(row: asyncpg.Record) -> str:
    return str(row["ai_duplicate_group_id"] or row["id"])


async def _rows(conn: asyncpg.Connection, project_id: uuid.UUID,
                ids: list[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
    rows = await conn.fetch(
        """SELECT id, ai_duplicate_group_id, duplicate_confirmed FROM interactions
            WHERE project_id = $1 AND id = ANY($2::uuid[]) ORDER BY id FOR NO KEY UPDATE""", project_id, ids)
    return {r["id"]: r for r in rows}


async def _pair(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID, other_id: uuid.UUID,
                itself: str) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The two rows a person's decision about a pair reads, locked, under the project's grouping lock: 422
    (`itself`) for an interaction paired with itself, 404 when either is not in the project."""
    if interaction_id == other_id:
        raise Problem(422, itself)
    await lock_project(conn, project_id)
    rows = await _rows(conn, project_id, [interaction_id, other_id])
    if len(rows) < 2:
        raise Problem(404, "no such interaction")
    return rows[interaction_id], rows[other_id]


async def _rename(conn: asyncpg.Connection, project_id: uuid.UUID, groups: list[str], into: str) -> None:
    """Rename groups on the interactions and on their enrichment signatures alike."""
    await conn.execute(
        """UPDATE interactions SET ai_duplicate_group_id = $3, updated_at = now()
            WHERE project_id = $1 AND ai_duplicate_group_id = ANY($2::text[]) AND ai_duplicate_group_id <> $3""",
        project_id, groups, into)
    await conn.execute(
        """UPDATE enrichment_signatures SET group_id = $3
            WHERE project_id = $1 AND group_id = ANY($2::text[]) AND group_id <> $3""", project_id, groups, into)


async def _settle(conn: asyncpg.Connection, project_id: uuid.UUID, groups: list[str]) -> None:
    """A confirmed member left without another confirmed member in its group is no longer a confirmed
    duplicate (whatever unconfirmed members the workers added stay with it): a person confirmed it together
    with others, and they are gone."""
    await conn.execute(
        """UPDATE interactions i SET duplicate_confirmed = false, updated_at = now()
            WHERE i.project_id = $1 AND i.ai_duplicate_group_id = ANY($2::text[]) AND i.duplicate_confirmed
              AND NOT EXISTS (SELECT 1 FROM interactions o
                               WHERE o.project_id = $1 AND o.ai_duplicate_group_id = i.ai_duplicate_group_id
                                 AND o.id <> i.id AND o.duplicate_confirmed)""", project_id, groups)


async def merge(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID,
                other_id: uuid.UUID) -> Change:
    """Put `interaction_id` and `other_id` (and the groups they are in) in one group, both confirmed.

    The group keeps the smaller id, as the workers' merges do. A repeat finds nothing to change. Dismissals
    between the two groups are lifted: the person has just said they are duplicates.
    """
    a, b = await _pair(conn, project_id, interaction_id, other_id, "an interaction is not a duplicate of itself")
    groups = sorted({_group(a), _group(b)})
    into = groups[0]
    if len(groups) == 1 and a["duplicate_confirmed"] and b["duplicate_confirmed"]:
        return Change(False, into, tuple(groups))
    items = await demand.items_reaching(conn, project_id, [interaction_id, other_id], groups)
    await _rename(conn, project_id, groups, into)
    await conn.execute(
        """UPDATE interactions SET ai_duplicate_group_id = $3, duplicate_confirmed = true, updated_at = now()
            WHERE project_id = $1 AND id = ANY($2::uuid[])""", project_id, [interaction_id, other_id], into)
    await conn.execute(
        "UPDATE enrichment_signatures SET group_id = $3 WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])",
        project_id, [interaction_id, other_id], into)
    await conn.execute(
        """DELETE FROM duplicate_dismissals d
             USING interactions x, interactions y
            WHERE d.project_id = $1 AND x.project_id = $1 AND y.project_id = $1
              AND x.id = d.interaction_id AND y.id = d.other_id
              AND x.ai_duplicate_group_id = $2 AND y.ai_duplicate_group_id = $2""", project_id, into)
    return Change(True, into, tuple(groups), await demand.sync(conn, project_id, items))


async def unmerge(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID) -> Change:
    """Take an interaction out of its group: it becomes a group of its own, unconfirmed, and a dismissal is
    recorded with each member it leaves, so no worker puts it back. The rest of the group stays together
    (renamed after its smallest id when it was named after this one); a member left as the group's only
    confirmed one is no longer a confirmed duplicate. Nothing to undo is no error (a repeat)."""
    await lock_project(conn, project_id)
    rows = await _rows(conn, project_id, [interaction_id])
    if not rows:
        raise Problem(404, "no such interaction")
    group = _group(rows[interaction_id])
    own = str(interaction_id)
    others = [r["id"] for r in await conn.fetch(
        """SELECT id FROM interactions WHERE project_id = $1 AND ai_duplicate_group_id = $2 AND id <> $3
            ORDER BY id FOR NO KEY UPDATE""", project_id, group, interaction_id)]
    items = await demand.items_reaching(conn, project_id, [interaction_id], [group])
    if not others:
        if rows[interaction_id]["duplicate_confirmed"]:
            await conn.execute("UPDATE interactions SET duplicate_confirmed = false, updated_at = now() "
                               "WHERE project_id = $1 AND id = $2", project_id, interaction_id)
            return Change(True, own, (group,), await demand.sync(conn, project_id, items))
        return Change(False, own, (group,))
    rest = str(min(others)) if group == own else group
    if group == own:  # the rest was named after the one leaving: renamed first, or the rename would take it along
        await _rename(conn, project_id, [group], rest)
    await conn.execute(
        """UPDATE interactions SET ai_duplicate_group_id = $3, duplicate_confirmed = false, updated_at = now()
            WHERE project_id = $1 AND id = $2""", project_id, interaction_id, own)
    await conn.execute("UPDATE enrichment_signatures SET group_id = $3 WHERE project_id = $1 AND interaction_id = $2",
                       project_id, interaction_id, own)
    await _settle(conn, project_id, [rest])
    await conn.executemany(
        """INSERT INTO duplicate_dismissals (project_id, interaction_id, other_id) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING""",
        [(project_id, *sorted((interaction_id, other))) for other in others])
    return Change(True, own, (group,), await demand.sync(conn, project_id, items))


@dataclass(frozen=True)
class Leaving:
    """Interactions about to be deleted (erasure, retention): the groups they leave and the feedback items
    whose reach that can alter."""

    groups: list[str]
    items: list[uuid.UUID]


async def leaving(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_ids: list[uuid.UUID]) -> Leaving:
    """Read, before the interactions go and under the grouping lock, what their deletion touches."""
    groups = [r[0] for r in await conn.fetch(
        """SELECT DISTINCT ai_duplicate_group_id FROM interactions
            WHERE project_id = $1 AND id = ANY($2::uuid[]) AND ai_duplicate_group_id IS NOT NULL""",
        project_id, interaction_ids)]
    return Leaving(groups, await demand.items_reaching(conn, project_id, interaction_ids, groups))


async def left(conn: asyncpg.Connection, project_id: uuid.UUID, gone: Leaving) -> list[demand.Moved]:
    """After the deletion: a confirmed member left without another confirmed one is no longer a confirmed
    duplicate (as `unmerge` leaves it), and the items reaching the groups are recounted."""
    await _settle(conn, project_id, gone.groups)
    return await demand.sync(conn, project_id, gone.items)


async def dismiss(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID,
                  other_id: uuid.UUID) -> bool:
    """Record that two interactions are not duplicates; True when this call recorded it (False: a repeat).
    Two interactions in one group are separated with `unmerge` first (409 here)."""
    one, other = await _pair(conn, project_id, interaction_id, other_id,
                             "an interaction is not a suggestion for itself")
    if _group(one) == _group(other):
        raise Problem(409, "these interactions are in one duplicate group: take one out with "
                           "DELETE …/duplicate-of first")
    low, high = sorted((interaction_id, other_id))
    created = await conn.fetchval(
        """INSERT INTO duplicate_dismissals (project_id, interaction_id, other_id) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING true""", project_id, low, high)
    return bool(created)


async def dismissed_with(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
                         interaction_id: uuid.UUID) -> list[uuid.UUID]:
    """The interactions a person said are not duplicates of this one."""
    rows = await conn.fetch(
        """SELECT other_id AS id FROM duplicate_dismissals WHERE project_id = $1 AND interaction_id = $2
           UNION ALL
           SELECT interaction_id FROM duplicate_dismissals WHERE project_id = $1 AND other_id = $2""",
        project_id, interaction_id)
    return [r["id"] for r in rows]


async def conflicts(conn: asyncpg.Connection, project_id: uuid.UUID, interaction_id: uuid.UUID,
                    groups: list[str]) -> bool:
    """Whether putting `interaction_id` and the members of `groups` in one group would join a pair a person
    dismissed, or two groups a person confirmed apart from each other (what a worker checks before it groups
    on its own). A confirmed group decides who is emailed and whose demand an item counts: only a person's
    merge joins two of them."""
    found: bool = await conn.fetchval(
        """WITH members AS (
               SELECT id, ai_duplicate_group_id, duplicate_confirmed FROM interactions
                WHERE project_id = $1 AND ai_duplicate_group_id = ANY($2::text[])
               UNION SELECT id, ai_duplicate_group_id, duplicate_confirmed FROM interactions
                WHERE project_id = $1 AND id = $3)
           SELECT EXISTS (SELECT 1 FROM duplicate_dismissals d
                           WHERE d.project_id = $1 AND d.interaction_id IN (SELECT id FROM members)
                             AND d.other_id IN (SELECT id FROM members))
               OR (SELECT count(DISTINCT coalesce(ai_duplicate_group_id, id::text)) FROM members
                    WHERE duplicate_confirmed) > 1""", project_id, groups, interaction_id)
    return found
