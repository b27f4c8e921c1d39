"""The team's other desks: the feedback board, the roadmap as columns, surveys with their answers
summarised, the conversations inbox with replies, and the replays list — each from the API's handlers."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any, get_args

import msgspec
from litestar import Request, get, post
from litestar.response import Redirect, Template

from cell.auth import WRITE, require
from cell.chat import routes as chat
from cell.chat.types import ConversationPatch, MessageIn
from cell.chat.types import Status as ChatStatus
from cell.context import ctx
from cell.dashboard.desk import choice, desk, form_of, page
from cell.feedback import routes as feedback
from cell.feedback.types import FeedbackStatus
from cell.replays import routes as replays
from cell.roadmap import routes as roadmap
from cell.roadmap.types import RoadmapStatus
from cell.surveys import queries as survey_queries
from cell.surveys import routes as surveys
from common.problems import Problem

ROADMAP_COLUMNS: tuple[str, ...] = get_args(RoadmapStatus)


@get("/app/projects/{project_id:uuid}/board", include_in_schema=False)
async def board(request: Request[Any, Any, Any], project_id: uuid.UUID, status: str | None = None,
                sort: str | None = None, cursor: str | None = None) -> Template:
    """Feedback items with their votes, newest or most voted first."""
    seen = await desk(request, project_id)
    order = "votes" if sort == "votes" else "new"
    items = await feedback.list_items.fn(request, project_id, status=choice(status, FeedbackStatus, "status"),
                                         category=None, q=None, sort=order, cursor=cursor or None, limit=50)
    return page("board.html", seen.context("Board", "board", items=items, sort=order, status=status or "",
                                           statuses=get_args(FeedbackStatus)))


@get("/app/projects/{project_id:uuid}/roadmap", include_in_schema=False)
async def roadmap_page(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Template:
    """The roadmap as columns, in the team's order."""
    seen = await desk(request, project_id)
    items = await roadmap.list_items.fn(request, project_id, visibility=None, status=None, cursor=None, limit=200)
    columns: dict[str, list[Any]] = {c: [] for c in ROADMAP_COLUMNS}
    for item in items.data:
        columns.setdefault(item.status, []).append(item)
    return page("roadmap.html", seen.context("Roadmap", "roadmap", columns=columns))


@get("/app/projects/{project_id:uuid}/surveys", include_in_schema=False)
async def surveys_page(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Template:
    """Surveys with their answers summarised: how many chose each option, and the average rating."""
    seen = await desk(request, project_id)
    listed = await surveys.list_surveys.fn(request, project_id, active=None, cursor=None, limit=50)
    rows = await survey_queries.summaries(ctx(request).pool, project_id, [s.id for s in listed.data])
    answers: dict[uuid.UUID, dict[str, list[tuple[str, int]]]] = defaultdict(lambda: defaultdict(list))
    averages: dict[tuple[uuid.UUID, str], tuple[float, int]] = {}
    for r in rows:
        answers[r["survey_id"]][r["question"]].append((r["answer"], r["n"]))
        if r["kind"] == "number":
            total, count = averages.get((r["survey_id"], r["question"]), (0.0, 0))
            averages[(r["survey_id"], r["question"])] = (total + float(r["answer"]) * r["n"], count + r["n"])
    summary = [{"survey": s, "questions": [
        {"text": q.get("text", q.get("id")), "answers": answers[s.id].get(str(q.get("id")), []),
         "average": _average(averages.get((s.id, str(q.get("id")))))}
        for q in s.definition.get("questions", []) if isinstance(q, dict)]} for s in listed.data]
    return page("surveys.html", seen.context("Surveys", "surveys", summary=summary))


def _average(pair: tuple[float, int] | None) -> float | None:
    return round(pair[0] / pair[1], 2) if pair and pair[1] else None


@get("/app/projects/{project_id:uuid}/conversations", include_in_schema=False)
async def conversations(request: Request[Any, Any, Any], project_id: uuid.UUID, status: str | None = None,
                        cursor: str | None = None) -> Template:
    """The agent inbox: conversations with the latest activity first."""
    seen = await desk(request, project_id)
    listed = await chat.list_conversations.fn(request, project_id, status=choice(status, ChatStatus, "status"),
                                              assignee_id=None,
                                              user_id=None, sort="last_message_at", cursor=cursor or None, limit=50)
    return page("conversations.html", seen.context("Conversations", "conversations", listed=listed,
                                                   status=status or "", statuses=get_args(ChatStatus)))


@get("/app/projects/{project_id:uuid}/conversations/{conversation_id:uuid}", include_in_schema=False)
async def conversation(request: Request[Any, Any, Any], project_id: uuid.UUID,
                       conversation_id: uuid.UUID) -> Template:
    """One conversation, its messages oldest first, and the reply box."""
    seen = await desk(request, project_id)
    found = await chat.get_conversation.fn(request, project_id, conversation_id)
    messages = await chat.list_messages.fn(request, project_id, conversation_id, cursor=None, limit=200)
    return page("conversation.html", seen.context(found.subject or "Conversation", "conversations",
                                                  conversation=found, messages=messages.data))


@post("/app/projects/{project_id:uuid}/conversations/{conversation_id:uuid}", include_in_schema=False)
async def reply(request: Request[Any, Any, Any], project_id: uuid.UUID, conversation_id: uuid.UUID) -> Redirect:
    """Send an agent's reply, or close or reopen the conversation, with the API's handlers."""
    seen = await desk(request, project_id)
    fields = await form_of(request, seen)
    require(seen.principal, level=WRITE)
    body = (fields.get("body") or [""])[0].strip()
    status = (fields.get("status") or [""])[0]
    try:
        if body:
            await chat.reply.fn(request, project_id, conversation_id, MessageIn(body=body))
        if status:
            await chat.update_conversation.fn(request, project_id, conversation_id,
                                              msgspec.convert({"status": status}, ConversationPatch))
    except (ValueError, msgspec.ValidationError) as exc:
        raise Problem(422, str(exc).split(" - at ")[0]) from None
    return Redirect(f"/app/projects/{project_id}/conversations/{conversation_id}", status_code=303)


@get("/app/projects/{project_id:uuid}/replays", include_in_schema=False)
async def replays_page(request: Request[Any, Any, Any], project_id: uuid.UUID, cursor: str | None = None) -> Template:
    """Recorded sessions, newest first, each linked to the interaction it came with."""
    seen = await desk(request, project_id)
    listed = await replays.list_replays.fn(request, project_id, session_id=None, status=None, interaction_id=None,
                                           cursor=cursor or None, limit=50)
    return page("replays.html", seen.context("Replays", "replays", listed=listed))


ROUTES = [board, roadmap_page, surveys_page, conversations, conversation, reply, replays_page]
