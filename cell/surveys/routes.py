"""Survey endpoints: management CRUD and responses, the SDK's "what to show now" and its answers."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.params import Parameter

from cell import audit, users
from cell.auth import READ, WRITE, require
from cell.context import caller, ctx
from cell.interactions import queries as interactions
from cell.outbox import add as enqueue
from cell.paging import Page, decode_cursor, encode_cursor, limit_of
from cell.privacy import scrub
from cell.sessions.queries import identify
from cell.surveys import answers, queries, targeting
from cell.surveys.types import (
    MAX_NAME,
    ResponseIn,
    Survey,
    SurveyIn,
    SurveyPatch,
    SurveyResponse,
    SurveysToShow,
    SurveyToShow,
)
from common.ids import uuid7
from common.problems import Problem

BASE = "/v1/projects/{project_id:uuid}/surveys"


class _Exists(Exception):
    """The client-supplied response id was already stored: roll back and answer with the stored row."""


@get(BASE)
async def list_surveys(request: Request[Any, Any, Any], project_id: uuid.UUID, active: bool | None = None,
                       cursor: str | None = None, limit: int | None = None) -> Page[Survey]:
    """The project's surveys, newest first, optionally only the active (or inactive) ones."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    rows = await queries.page(ctx(request).pool, project_id, active,
                              decode_cursor(cursor) if cursor else None, size)
    data = [msgspec.convert(dict(r), Survey) for r in rows[:size]]
    return Page(data, encode_cursor(data[-1].created_at, data[-1].id) if len(rows) > size else None)


@post(BASE, status_code=201)
async def create_survey(request: Request[Any, Any, Any], project_id: uuid.UUID, data: SurveyIn) -> Survey:
    """Create a survey; audited in the same transaction."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    title = data.definition.get("title")
    name = data.name or (title[:MAX_NAME] if isinstance(title, str) and title else "Untitled survey")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.insert(conn, uuid7(), project_id, name, data.definition, data.targeting, data.active)
        await audit.record(conn, principal, "survey.created", "survey", row["id"], {"active": data.active})
    return msgspec.convert(dict(row), Survey)


@get(BASE + "/{survey_id:uuid}")
async def get_survey(request: Request[Any, Any, Any], project_id: uuid.UUID, survey_id: uuid.UUID) -> Survey:
    """One survey with its response count."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get(ctx(request).pool, project_id, survey_id)
    if row is None:
        raise Problem(404, "no such survey")
    return msgspec.convert(dict(row), Survey)


@patch(BASE + "/{survey_id:uuid}")
async def update_survey(request: Request[Any, Any, Any], project_id: uuid.UUID, survey_id: uuid.UUID,
                        data: SurveyPatch) -> Survey:
    """Change name, definition, targeting or the active flag; audited in the same transaction."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    if not changes:
        raise Problem(422, "nothing to change: send name, definition, targeting or active")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.update(conn, project_id, survey_id, changes)
        if row is None:
            raise Problem(404, "no such survey")
        await audit.record(conn, principal, "survey.updated", "survey", survey_id, {"fields": sorted(changes)})
    return msgspec.convert(dict(row), Survey)


@delete(BASE + "/{survey_id:uuid}", status_code=204)
async def delete_survey(request: Request[Any, Any, Any], project_id: uuid.UUID, survey_id: uuid.UUID) -> None:
    """Delete a survey and its response rows; audited in the same transaction."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if not await queries.delete(conn, project_id, survey_id):
            raise Problem(404, "no such survey")
        await audit.record(conn, principal, "survey.deleted", "survey", survey_id)


@get(BASE + "/{survey_id:uuid}/responses")
async def list_responses(request: Request[Any, Any, Any], project_id: uuid.UUID, survey_id: uuid.UUID,
                         cursor: str | None = None, limit: int | None = None) -> Page[SurveyResponse]:
    """A survey's responses, newest first, each with its interaction, session and person."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    pool = ctx(request).pool
    if await queries.get(pool, project_id, survey_id) is None:
        raise Problem(404, "no such survey")
    rows = await queries.page_responses(pool, project_id, survey_id, decode_cursor(cursor) if cursor else None,
                                        size)
    data = [msgspec.convert(dict(r), SurveyResponse) for r in rows[:size]]
    return Page(data, encode_cursor(data[-1].created_at, data[-1].id) if len(rows) > size else None)


@get("/v1/ingest/surveys")
async def surveys_to_show(
    request: Request[Any, Any, Any],
    url: str | None = Parameter(default=None, max_length=4096),
    session_id: uuid.UUID | None = None,
) -> SurveysToShow:
    """The active surveys whose targeting holds now for this page and session (an unknown session has
    just started), and when one that holds but for its delay becomes due."""
    principal = require(await caller(request), ingest=True)
    pid = principal.project_id
    pool = ctx(request).pool
    candidates = await queries.active(pool, pid)
    if not candidates:
        return SurveysToShow(data=[])
    session = await queries.session(pool, pid, session_id) if session_id is not None else None
    now = session["now"] if session is not None else datetime.now(UTC)
    started_at = session["started_at"] if session is not None else now
    done: set[uuid.UUID] = set()
    if any(s["targeting"].get("showOnce") for s in candidates):
        person = session["user_id"] if session is not None else None
        if person is not None and not await users.countable(pool, pid, person):
            person = None  # a claimed identity nobody proved counts for its session only
        done = await queries.answered(pool, pid, session_id, person)
    shown: list[SurveyToShow] = []
    waits: list[float] = []
    for s in candidates:
        answered = s["id"] in done
        if targeting.to_show(s["targeting"], url=url, started_at=started_at, now=now, answered=answered):
            shown.append(SurveyToShow(id=s["id"], name=s["name"], definition=s["definition"],
                                      targeting=s["targeting"]))
        elif not (s["targeting"].get("showOnce") and answered) and targeting.page_matches(
                s["targeting"].get("showOnPages"), url):
            waits.append(targeting.due_in(s["targeting"], started_at, now))
    return SurveysToShow(data=shown, check_again_in=math.ceil(min(waits)) if waits else None)


@post("/v1/ingest/surveys/{survey_id:uuid}/responses", status_code=201)
async def respond(request: Request[Any, Any, Any], survey_id: uuid.UUID,
                  data: ResponseIn) -> Response[SurveyResponse]:
    """Store the answers (scrubbed by the privacy rules) as a `survey` interaction plus a survey_response,
    counted exactly; a retry with the same `id` returns the stored response with 200."""
    principal = require(await caller(request), ingest=True)
    pid = principal.project_id
    pool = ctx(request).pool
    survey = await queries.get(pool, pid, survey_id)
    if survey is None:
        raise Problem(404, "no such survey")
    response_id = data.id or uuid7()
    if data.id is not None and (stored := await _stored(pool, pid, survey_id, data.id)) is not None:
        return Response(stored, status_code=200)
    if not survey["active"]:
        raise Problem(409, "this survey is not active")
    # Many text answers can make a large body: scrubbed off the event loop then, with the cell's budget.
    scrubber = ctx(request).scrubber
    rules, report = await scrub.rules_for(pool, pid), scrubber.report()
    checked = answers.check(survey["definition"], data.responses)
    declared = request.headers.get("content-length", "")
    kept = await scrubber.run(int(declared) if declared.isdigit() else 0,
                              lambda: scrub.scrub_value(rules, checked, "content", report))
    show_once = bool(survey["targeting"].get("showOnce"))
    interaction_id = uuid7()
    content = {"text": answers.as_text(survey["definition"], kept), "survey_id": str(survey_id),
               "survey_response_id": str(response_id), "responses": kept}
    try:
        async with pool.acquire() as conn, conn.transaction():
            user_id, countable = await identify(conn, pid, data.session_id, data.user,
                                                ctx(request).settings.secret_key, rules)
            if show_once:  # once per session, and per person where the person is proven (or nobody can be)
                person = user_id if countable else None
                await queries.lock_once(conn, survey_id, data.session_id, person)
                if await queries.get_response(conn, response_id) is not None:
                    raise _Exists
                if await queries.answered(conn, pid, data.session_id, person, survey_id):
                    raise Problem(409, "this survey is shown once and was already answered here")
            await interactions.insert(conn, {
                "id": interaction_id, "project_id": pid, "type": "survey", "source": data.source,
                "user_id": user_id, "session_id": data.session_id, "content_text": content["text"] or None,
                "content": content, "severity": None, "tags": None, "technical_context": None,
                "privacy_scope": report.as_json() if report else None,
            })
            row = await queries.insert_response(conn, response_id, pid, survey_id, interaction_id, kept)
            if row is None:
                raise _Exists
            await interactions.count_on_session(conn, pid, data.session_id)
            if not await queries.count_response(conn, pid, survey_id):
                raise Problem(409, "this survey is not active")
            await enqueue(conn, pid, "interaction.created", {"interaction_id": str(interaction_id)})
    except _Exists:
        stored = await _stored(pool, pid, survey_id, response_id)
        if stored is None:
            raise Problem(409, "this id is already used") from None
        return Response(stored, status_code=200)
    except asyncpg.ForeignKeyViolationError as exc:
        raise Problem(422, "session_id does not name a session of this project") from exc
    return Response(SurveyResponse(id=response_id, survey_id=survey_id, interaction_id=interaction_id,
                                   session_id=data.session_id, user_id=user_id, responses=kept,
                                   created_at=row["created_at"]), status_code=201)


async def _stored(pool: asyncpg.Pool, project_id: uuid.UUID, survey_id: uuid.UUID,
                  response_id: uuid.UUID) -> SurveyResponse | None:
    """The response stored under a client id, if it is this survey's; a different one is a 409."""
    row = await queries.get_response(pool, response_id)
    if row is None:
        return None
    if row["project_id"] != project_id or row["survey_id"] != survey_id:
        raise Problem(409, "this id is already used")
    return msgspec.convert(dict(row), SurveyResponse)


ROUTES = [list_surveys, create_survey, get_survey, update_survey, delete_survey, list_responses,
          surveys_to_show, respond]
