"""SQL for surveys and their responses, and for who answers (the end user behind a session)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

COLUMNS = "id, project_id, name, definition, targeting, active, response_count, created_at, updated_at"
RESPONSE_COLUMNS = """r.id, r.project_id, r.survey_id, r.interaction_id, i.session_id, i.user_id, r.responses,
    r.created_at"""
RESPONSE_FROM = """survey_responses r
    LEFT JOIN interactions i ON i.project_id = r.project_id AND i.id = r.interaction_id"""


async def insert(conn: asyncpg.Connection, survey_id: uuid.UUID, project_id: uuid.UUID, name: str,
                 definition: dict[str, Any], targeting: dict[str, Any], active: bool) -> asyncpg.Record:
    """Store a new survey."""
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO surveys (id, project_id, name, definition, targeting, active)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}""",
        survey_id, project_id, name, definition, targeting, active,
    )
    return row


async def get(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID,
              survey_id: uuid.UUID) -> asyncpg.Record | None:
    """One survey of the project."""
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM surveys WHERE project_id = $1 AND id = $2",
                               project_id, survey_id)


async def page(pool: asyncpg.Pool, project_id: uuid.UUID, active: bool | None,
               after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 surveys, newest first, strictly after the cursor position."""
    where, params = keyset("project_id = $1", [project_id], after, "created_at, id")
    if active is not None:
        params.append(active)
        where += f" AND active = ${len(params)}"
    params.append(limit + 1)
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {COLUMNS} FROM surveys WHERE {where}
             ORDER BY created_at DESC, id DESC LIMIT ${len(params)}""", *params)
    return rows


def keyset(where: str, params: list[Any], after: tuple[datetime, uuid.UUID] | None,
           columns: str) -> tuple[str, list[Any]]:
    """Add "strictly after the cursor" in (time desc, id desc) order; written out only when there is a
    cursor, so the first page's plan is a plain index scan."""
    if after is None:
        return where, params
    params = [*params, *after]
    return f"{where} AND ({columns}) < (${len(params) - 1}, ${len(params)})", params


async def update(conn: asyncpg.Connection, project_id: uuid.UUID, survey_id: uuid.UUID,
                 changes: dict[str, Any]) -> asyncpg.Record | None:
    """Apply the changed fields (names come from the patch type, never from the client)."""
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=3))
    return await conn.fetchrow(
        f"UPDATE surveys SET {sets}, updated_at = now() WHERE project_id = $1 AND id = $2 RETURNING {COLUMNS}",
        project_id, survey_id, *changes.values(),
    )


async def delete(conn: asyncpg.Connection, project_id: uuid.UUID, survey_id: uuid.UUID) -> bool:
    """Remove a survey and its response rows (the survey interactions stay with their people)."""
    deleted = await conn.fetchval("DELETE FROM surveys WHERE project_id = $1 AND id = $2 RETURNING id",
                                  project_id, survey_id)
    return deleted is not None


async def active(pool: asyncpg.Pool, project_id: uuid.UUID) -> list[asyncpg.Record]:
    """The project's active surveys, oldest first (the order a widget shows them in)."""
    rows: list[asyncpg.Record] = await pool.fetch(
        """SELECT id, name, definition, targeting FROM surveys
            WHERE project_id = $1 AND active ORDER BY created_at, id""", project_id)
    return rows


async def session(pool: asyncpg.Pool, project_id: uuid.UUID, session_id: uuid.UUID) -> asyncpg.Record | None:
    """When the session started and whose it is, with the database's clock for comparison."""
    return await pool.fetchrow(
        "SELECT started_at, user_id, now() AS now FROM sessions WHERE project_id = $1 AND id = $2",
        project_id, session_id)


async def answered(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID, session_id: uuid.UUID | None,
                   user_id: uuid.UUID | None, survey_id: uuid.UUID | None = None) -> set[uuid.UUID]:
    """Surveys already answered in this session or by this person (in any session).

    Starts from the person's and the session's survey interactions (both indexed), not from a
    survey's possibly many responses.
    """
    if session_id is None and user_id is None:
        return set()
    rows = await conn.fetch(
        """SELECT DISTINCT r.survey_id FROM interactions i
             JOIN survey_responses r ON r.project_id = i.project_id AND r.interaction_id = i.id
            WHERE i.project_id = $1 AND i.type = 'survey' AND (i.session_id = $2 OR i.user_id = $3)
              AND ($4::uuid IS NULL OR r.survey_id = $4)""",
        project_id, session_id, user_id, survey_id,
    )
    return {r["survey_id"] for r in rows}


async def lock_once(conn: asyncpg.Connection, survey_id: uuid.UUID, session_id: uuid.UUID,
                    user_id: uuid.UUID | None) -> None:
    """Serialize responses to one show-once survey from one session or person until commit, so two
    concurrent answers cannot both pass the "not answered yet" check. Session first, then person:
    one order everywhere, so two such locks never deadlock."""
    keys = [f"survey-once:{survey_id}:session:{session_id}"]
    if user_id is not None:
        keys.append(f"survey-once:{survey_id}:user:{user_id}")
    for key in keys:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)


async def insert_response(conn: asyncpg.Connection, response_id: uuid.UUID, project_id: uuid.UUID,
                          survey_id: uuid.UUID, interaction_id: uuid.UUID,
                          responses: dict[str, Any]) -> asyncpg.Record | None:
    """Store a response unless its id exists; None when it did (an idempotent retry)."""
    return await conn.fetchrow(
        """INSERT INTO survey_responses (id, project_id, survey_id, interaction_id, responses)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING created_at""",
        response_id, project_id, survey_id, interaction_id, responses,
    )


async def get_response(conn: asyncpg.Connection | asyncpg.Pool, response_id: uuid.UUID) -> asyncpg.Record | None:
    """A response by id, whatever its project (the caller checks which)."""
    return await conn.fetchrow(f"SELECT {RESPONSE_COLUMNS} FROM {RESPONSE_FROM} WHERE r.id = $1", response_id)


async def count_response(conn: asyncpg.Connection, project_id: uuid.UUID, survey_id: uuid.UUID) -> bool:
    """Count a newly stored response, in its transaction; False when the survey is no longer active."""
    counted = await conn.fetchval(
        """UPDATE surveys SET response_count = response_count + 1
            WHERE project_id = $1 AND id = $2 AND active RETURNING id""", project_id, survey_id)
    return counted is not None


async def page_responses(pool: asyncpg.Pool, project_id: uuid.UUID, survey_id: uuid.UUID,
                         after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` + 1 responses to one survey, newest first, strictly after the cursor position."""
    where, params = keyset("r.project_id = $1 AND r.survey_id = $2", [project_id, survey_id], after,
                           "r.created_at, r.id")
    params.append(limit + 1)
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {RESPONSE_COLUMNS} FROM {RESPONSE_FROM} WHERE {where}
             ORDER BY r.created_at DESC, r.id DESC LIMIT ${len(params)}""", *params)
    return rows


async def summaries(pool: asyncpg.Pool, project_id: uuid.UUID, survey_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Per survey, question and answer given: how many gave it (`kind` says whether it was a number, so a
    rating's average follows), over every response — one aggregate query for a whole page of surveys."""
    rows: list[asyncpg.Record] = await pool.fetch(
        """SELECT s.survey_id, a.key AS question, a.value #>> '{}' AS answer, jsonb_typeof(a.value) AS kind,
                  count(*) AS n
             FROM survey_responses s, jsonb_each(s.responses) AS a
            WHERE s.project_id = $1 AND s.survey_id = ANY($2::uuid[])
              AND jsonb_typeof(a.value) IN ('string', 'number', 'boolean')
            GROUP BY 1, 2, 3, 4
            ORDER BY 1, 2, 5 DESC""",
        project_id, survey_ids)
    return rows
