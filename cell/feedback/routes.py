"""Feedback board endpoints: the public board, votes and suggestions for end users; items and links for the team."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import asyncpg
import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.params import Parameter

from cell import audit, users
from cell.auth import READ, WRITE, Principal, require
from cell.context import caller, ctx
from cell.feedback import queries
from cell.feedback.types import (
    MAX_CATEGORY,
    MAX_TITLE,
    FeedbackItem,
    FeedbackItemIn,
    FeedbackItemPatch,
    FeedbackLink,
    FeedbackRef,
    FeedbackStatus,
    InteractionLinks,
    IssueRef,
    LinkIn,
    LinkReceipt,
    PublicFeedbackItem,
    PublicStatus,
    SuggestionIn,
    Vote,
    VoteCount,
    VoteIn,
    VoteReceipt,
)
from cell.interactions import queries as interactions
from cell.outbox import add as enqueue
from cell.paging import Page, decode_cursor, encode_cursor, limit_of
from cell.privacy import scrub
from common.ids import uuid7
from common.problems import FieldError, Problem

BoardSort = Literal["votes", "new"]
NO_ITEM = "no such feedback item"


class _Replay(Exception):
    """Nothing new to write (a retried suggestion, a repeated vote): roll back, answer with what is stored."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer


def _foreign(exc: asyncpg.ForeignKeyViolationError) -> Problem:
    """A refused reference: a session of another project is invalid input, anything else is absent."""
    if "session" in (exc.constraint_name or ""):
        return Problem(422, "request body has invalid fields", errors=[
            FieldError("/session_id", "session_id names a session of another project")])
    return Problem(404, NO_ITEM)


# Ingest -----------------------------------------------------------------------


@get("/v1/ingest/feedback-items")
async def public_board(
    request: Request[Any, Any, Any],
    status: PublicStatus | None = None,
    category: str | None = Parameter(default=None, max_length=100),
    sort: BoardSort = "votes",
    session_id: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page[PublicFeedbackItem]:
    """The public board: every item but the declined ones, most voted (or newest) first.

    With `session_id`, each item says whether that session has voted for it.
    """
    principal = require(await caller(request), ingest=True)
    size = limit_of(limit)
    f = interactions.Filters(principal.project_id)
    f.clauses.append("status <> 'wont_do'")
    f.add("status = {}", status)
    f.add("category = {}", category)
    by_votes = sort == "votes"
    rows = await queries.page_items(ctx(request).pool, f, by_votes=by_votes, after=cursor, limit=size,
                                    columns=queries.PUBLIC_COLUMNS, voter=session_id)
    data = [msgspec.convert(dict(r), PublicFeedbackItem) for r in rows[:size]]
    return Page(data, queries.next_cursor(rows, size, by_votes=by_votes))


@post("/v1/ingest/feedback-items", status_code=201)
async def suggest_item(request: Request[Any, Any, Any], data: SuggestionIn) -> Response[PublicFeedbackItem]:
    """An end user suggests an item: it joins the board under review, with their words as a linked
    `feedback` interaction (so duplicate grouping sees it). A retry with the same `id` returns it with 200."""
    principal = require(await caller(request), ingest=True)
    pid = principal.project_id
    item_id = data.id or uuid7()
    pool = ctx(request).pool
    # The board is public: privacy rules redact the user's words before anything is stored or shown.
    rules, report = await scrub.rules_for(pool, pid), scrub.Report()

    def clean(text: str, limit: int | None = None) -> str:  # a redaction marker may outgrow what it replaced
        return scrub.scrub_text(rules, text, "content", report)[:limit]

    title = clean(data.title, MAX_TITLE)
    description = data.description and clean(data.description)
    category = data.category and clean(data.category, MAX_CATEGORY)
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await queries.insert_item(conn, item_id, pid, title, description, "under_review", category, None)
            if row is None:
                raise _Replay(await queries.get_item(conn, pid, item_id))
            user = (await users.upsert(conn, pid, data.user, ctx(request).settings.secret_key, rules)
                    if data.user else None)
            user_id = user.id if user else None
            if data.session_id is not None:
                await interactions.ensure_session(conn, pid, data.session_id, user_id)
            content = {k: v for k, v in (("title", title), ("description", description), ("category", category))
                       if v is not None}
            interaction_id = uuid7()
            await interactions.insert(conn, {
                "id": interaction_id, "project_id": pid, "type": "feedback", "source": "sdk",
                "user_id": user_id, "session_id": data.session_id,
                "content_text": interactions.content_text(content), "content": content,
                "severity": None, "tags": None, "technical_context": None,
                "privacy_scope": report.as_json() if report else None,
            })
            if data.session_id is not None:
                await interactions.count_on_session(conn, pid, data.session_id)
            linked = await queries.link(conn, pid, item_id, interaction_id, fresh=True)
            assert linked is not None  # both rows were just written in this transaction
            await enqueue(conn, pid, "interaction.created", {"interaction_id": str(interaction_id)})
    except _Replay as replay:
        if replay.answer is None:
            raise Problem(409, "this id is already used") from None
        return Response(msgspec.convert(dict(replay.answer), PublicFeedbackItem), status_code=200)
    except asyncpg.ForeignKeyViolationError as exc:
        raise _foreign(exc) from exc
    return Response(msgspec.convert(dict(row), PublicFeedbackItem), status_code=201)


@post("/v1/ingest/feedback-items/{item_id:uuid}/votes", status_code=201)
async def vote(request: Request[Any, Any, Any], item_id: uuid.UUID, data: VoteIn) -> Response[VoteReceipt]:
    """One vote per session, and per person when the user is verified (201); the same session or verified
    person voting again gets its vote back with 200."""
    principal = require(await caller(request), ingest=True)
    pid = principal.project_id
    pool = ctx(request).pool
    rules = await scrub.rules_for(pool, pid)
    try:
        async with pool.acquire() as conn, conn.transaction():
            if not await queries.votable(conn, pid, item_id):
                raise Problem(404, NO_ITEM)
            user = (await users.upsert(conn, pid, data.user, ctx(request).settings.secret_key, rules)
                    if data.user else None)
            user_id = user.id if user else None
            await interactions.ensure_session(conn, pid, data.session_id, user_id)
            row, count, cast = await queries.add_vote(conn, pid, item_id, data.session_id, user_id,
                                                      verified=user is not None and user.claim.verified)
            receipt = msgspec.convert({**dict(row), "vote_count": count}, VoteReceipt)
            if not cast:
                raise _Replay(receipt)
            await enqueue(conn, pid, "vote.created", {"vote_id": str(row["id"]), "feedback_item_id": str(item_id)})
    except _Replay as replay:
        return Response(replay.answer, status_code=200)
    except asyncpg.ForeignKeyViolationError as exc:
        raise _foreign(exc) from exc
    return Response(receipt, status_code=201)


@delete("/v1/ingest/feedback-items/{item_id:uuid}/votes", status_code=200)
async def unvote(request: Request[Any, Any, Any], item_id: uuid.UUID, session_id: uuid.UUID) -> VoteCount:
    """Withdraw the session's vote; withdrawing one that is not there changes nothing (safe to retry)."""
    principal = require(await caller(request), ingest=True)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        count = await queries.remove_vote(conn, principal.project_id, item_id, session_id)
    if count is None:
        raise Problem(404, NO_ITEM)
    return VoteCount(feedback_item_id=item_id, vote_count=count, voted=False)


# Management -------------------------------------------------------------------


@get("/v1/projects/{project_id:uuid}/feedback-items")
async def list_items(
    request: Request[Any, Any, Any],
    project_id: uuid.UUID,
    status: FeedbackStatus | None = None,
    category: str | None = Parameter(default=None, max_length=100),
    q: str | None = Parameter(default=None, max_length=500),
    sort: BoardSort = "new",
    cursor: str | None = None,
    limit: int | None = None,
) -> Page[FeedbackItem]:
    """Items newest (or most voted) first; `q` matches words inside the title, case-insensitively."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    f = interactions.Filters(project_id)
    f.add("status = {}", status)
    f.add("category = {}", category)
    f.add("strpos(lower(title), lower({})) > 0", q)
    by_votes = sort == "votes"
    rows = await queries.page_items(ctx(request).pool, f, by_votes=by_votes, after=cursor, limit=size)
    data = [msgspec.convert(dict(r), FeedbackItem) for r in rows[:size]]
    return Page(data, queries.next_cursor(rows, size, by_votes=by_votes))


@get("/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}")
async def get_item(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID) -> FeedbackItem:
    """One item with its counters."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get_item(ctx(request).pool, project_id, item_id)
    if row is None:
        raise Problem(404, NO_ITEM)
    return msgspec.convert(dict(row), FeedbackItem)


def _creator(principal: Principal) -> uuid.UUID | None:
    """The dashboard user behind a write (keys are no person)."""
    return uuid.UUID(principal.actor_id) if principal.actor_type == "admin" else None


@post("/v1/projects/{project_id:uuid}/feedback-items", status_code=201)
async def create_item(request: Request[Any, Any, Any], project_id: uuid.UUID, data: FeedbackItemIn) -> FeedbackItem:
    """The team adds an item to the board."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    item_id = uuid7()
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.insert_item(conn, item_id, project_id, data.title, data.description, data.status,
                                        data.category, _creator(principal))
        assert row is not None  # a fresh id
        await audit.record(conn, principal, "feedback_item.created", "feedback_item", item_id,
                           {"status": data.status})
    return msgspec.convert(dict(row), FeedbackItem)


@patch("/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}")
async def update_item(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                      data: FeedbackItemPatch) -> FeedbackItem:
    """Change title, description, status or category; audited in the same transaction."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    if not changes:
        raise Problem(422, "nothing to change: send title, description, status or category")
    meta: dict[str, Any] = {"fields": sorted(changes)}
    if "status" in changes:
        meta["status"] = changes["status"]
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.update_item(conn, project_id, item_id, changes)
        if row is None:
            raise Problem(404, NO_ITEM)
        await audit.record(conn, principal, "feedback_item.updated", "feedback_item", item_id, meta)
    return msgspec.convert(dict(row), FeedbackItem)


@delete("/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}", status_code=204)
async def delete_item(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID) -> None:
    """Remove an item with its votes and links; roadmap items that answered it count one fewer."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if not await queries.delete_item(conn, project_id, item_id):
            raise Problem(404, NO_ITEM)
        await audit.record(conn, principal, "feedback_item.deleted", "feedback_item", item_id)


@get("/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}/votes")
async def list_votes(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                     cursor: str | None = None, limit: int | None = None) -> Page[Vote]:
    """Who voted for an item, newest first."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    after = decode_cursor(cursor) if cursor else None
    pool = ctx(request).pool
    if await queries.get_item(pool, project_id, item_id) is None:
        raise Problem(404, NO_ITEM)
    rows = await queries.page_votes(pool, project_id, item_id, after, size)
    data = [msgspec.convert(dict(r), Vote) for r in rows[:size]]
    return Page(data, encode_cursor(data[-1].created_at, data[-1].id) if len(rows) > size else None)


@get("/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}/links")
async def list_links(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                     cursor: str | None = None, limit: int | None = None) -> Page[FeedbackLink]:
    """The interactions linked to an item, newest link first."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    after = decode_cursor(cursor) if cursor else None
    pool = ctx(request).pool
    if await queries.get_item(pool, project_id, item_id) is None:
        raise Problem(404, NO_ITEM)
    rows = await queries.page_links(pool, project_id, item_id, after, size)
    data = [msgspec.convert(dict(r), FeedbackLink) for r in rows[:size]]
    return Page(data, encode_cursor(data[-1].created_at, data[-1].id) if len(rows) > size else None)


@post("/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}/links", status_code=201)
async def link_interaction(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                           data: LinkIn) -> Response[LinkReceipt]:
    """Link an interaction of this project to the item (201); linking it again returns the link with 200."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        linked = await queries.link(conn, project_id, item_id, data.interaction_id)
        if linked is None:
            raise Problem(404, "no such feedback item or interaction")
        row, count, made = linked
        if made:
            await audit.record(conn, principal, "feedback_item.linked", "feedback_item", item_id,
                               {"interaction_id": str(data.interaction_id)})
    receipt = msgspec.convert({**dict(row), "linked_interaction_count": count}, LinkReceipt)
    return Response(receipt, status_code=201 if made else 200)


@delete("/v1/projects/{project_id:uuid}/feedback-items/{item_id:uuid}/links/{interaction_id:uuid}",
        status_code=204)
async def unlink_interaction(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                             interaction_id: uuid.UUID) -> None:
    """Remove the link between an interaction and the item."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if await queries.unlink(conn, project_id, item_id, interaction_id) is None:
            raise Problem(404, "no such link")
        await audit.record(conn, principal, "feedback_item.unlinked", "feedback_item", item_id,
                           {"interaction_id": str(interaction_id)})


@get("/v1/projects/{project_id:uuid}/interactions/{interaction_id:uuid}/links")
async def links_of_interaction(request: Request[Any, Any, Any], project_id: uuid.UUID,
                               interaction_id: uuid.UUID) -> InteractionLinks:
    """Everything an interaction is linked to: feedback items on the board and issues in trackers."""
    require(await caller(request, project_id), project_id, level=READ)
    found = await queries.interaction_links(ctx(request).pool, project_id, interaction_id)
    if found is None:
        raise Problem(404, "no such interaction")
    feedback, issues = found
    data: list[FeedbackRef | IssueRef] = [msgspec.convert(dict(r), FeedbackRef) for r in feedback]
    data += [msgspec.convert(dict(r), IssueRef) for r in issues]
    return InteractionLinks(data)


ROUTES = [public_board, suggest_item, vote, unvote, list_items, get_item, create_item, update_item, delete_item,
          list_votes, list_links, link_interaction, unlink_interaction, links_of_interaction]
