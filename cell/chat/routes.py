"""Chat endpoints: end users open conversations and write in them with their conversation token;
agents list, triage, answer and mark them read."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Request, Response, get, patch, post
from litestar.params import HeaderParameter

from cell import audit
from cell.auth import READ, WRITE, Principal, require
from cell.chat import queries, token
from cell.chat.types import (
    Conversation,
    ConversationIn,
    ConversationPatch,
    ConversationStarted,
    EndUserMessage,
    Message,
    MessageIn,
    ReadReceipt,
    Sort,
    Status,
)
from cell.context import caller, ctx
from cell.interactions import queries as interactions
from cell.interactions.queries import Filters
from cell.outbox import add as enqueue
from cell.paging import Page, decode_cursor, encode_cursor, limit_of
from cell.privacy import scrub
from cell.projects import secret as project_secret
from cell.sessions.queries import identify
from common.ids import uuid7
from common.problems import Problem

BASE = "/v1/projects/{project_id:uuid}/conversations"
INGEST = "/v1/ingest/conversations"
NOT_FOUND = "no such conversation"
# Optional on purpose: a missing token gets the same 404 as a wrong one, not a 400.
TOKEN = HeaderParameter(name=token.HEADER, default=None, required=False,
                        description="The conversation token returned when the conversation was opened.")


class _Exists(Exception):
    """The client-supplied id was already stored: roll back and answer with the stored row."""


# End users ---------------------------------------------------------------------------------------------------


@post(INGEST, status_code=201)
async def start_conversation(request: Request[Any, Any, Any], data: ConversationIn) -> Response[ConversationStarted]:
    """Open a conversation with its first inbound message and a `chat` interaction; the token in the answer
    is the end user's only way back into it. A retry with the same `id` returns it with 200."""
    principal = require(await caller(request), ingest=True)
    pid = principal.project_id
    pool = ctx(request).pool
    secret = await project_secret.project_secret(pool, ctx(request).settings.secret_key, pid)
    assert secret is not None  # the caller's project is homed here
    conversation_id = data.id or uuid7()
    if data.id is not None and (row := await queries.get(pool, pid, data.id)) is not None:
        return _retried(row, data, secret)
    interaction_id = uuid7()
    scrubber = ctx(request).scrubber
    rules, report = await scrub.rules_for(pool, pid), scrubber.report()
    body, subject = await scrubber.run(len(data.body) + len(data.subject or ""), lambda: (
        scrub.scrub_message(rules, data.body, report),
        scrub.scrub_message(rules, data.subject, report) if data.subject is not None else None))
    redactions = report.as_json() if report else {}
    content: dict[str, Any] = {"text": body, "conversation_id": str(conversation_id)}
    if subject is not None:
        content["subject"] = subject
    try:
        async with pool.acquire() as conn, conn.transaction():
            user_id, _ = await identify(conn, pid, data.session_id, data.user, ctx(request).settings.secret_key, rules)
            row = await queries.insert(conn, conversation_id, pid, user_id, data.session_id, subject)
            if row is None:
                raise _Exists
            message = await queries.insert_message(conn, uuid7(), pid, conversation_id, "inbound", body, None,
                                                   redactions)
            assert message is not None  # a fresh id
            await interactions.insert(conn, {
                "id": interaction_id, "project_id": pid, "type": "chat", "source": data.source,
                "user_id": user_id, "session_id": data.session_id, "content_text": body, "content": content,
                "severity": None, "tags": None, "technical_context": None, "privacy_scope": redactions or None,
            })
            await interactions.count_on_session(conn, pid, data.session_id)
            await enqueue(conn, pid, "interaction.created", {"interaction_id": str(interaction_id)})
            await enqueue(conn, pid, "message.created", _event(message))
    except _Exists:
        row = await queries.get(pool, pid, conversation_id)
        if row is None:
            raise Problem(409, "this id is already used") from None
        return _retried(row, data, secret)
    except asyncpg.ForeignKeyViolationError as exc:
        raise Problem(422, "session_id does not name a session of this project") from exc
    return Response(_started(row, secret), status_code=201)


@get(INGEST + "/{conversation_id:uuid}/messages")
async def read_as_end_user(request: Request[Any, Any, Any], conversation_id: uuid.UUID, cursor: str | None = None,
                           limit: int | None = None,
                           conversation_token: Annotated[str | None, TOKEN] = None) -> Page[EndUserMessage]:
    """The conversation's messages, oldest first; the agents' replies shown here are marked read."""
    principal = require(await caller(request), ingest=True)
    pool = ctx(request).pool
    await _open(request, principal, conversation_id, conversation_token)
    size = limit_of(limit)
    rows = await queries.page_messages(pool, principal.project_id, conversation_id,
                                       decode_cursor(cursor) if cursor else None, size)
    data = [msgspec.convert(dict(r), EndUserMessage) for r in rows[:size]]
    unread = [m.id for m in data if m.direction == "outbound" and m.read_at is None]
    if unread:
        read = await queries.mark_read(pool, principal.project_id, conversation_id, "outbound", unread)
        for m in data:
            m.read_at = read.get(m.id, m.read_at)
    return Page(data, encode_cursor(data[-1].created_at, data[-1].id) if len(rows) > size else None)


@post(INGEST + "/{conversation_id:uuid}/messages", status_code=201)
async def write_as_end_user(request: Request[Any, Any, Any], conversation_id: uuid.UUID, data: MessageIn,
                            conversation_token: Annotated[str | None, TOKEN] = None) -> Response[EndUserMessage]:
    """Add the end user's message (reopening a closed conversation), counted exactly."""
    principal = require(await caller(request), ingest=True)
    await _open(request, principal, conversation_id, conversation_token)
    row, status = await _add_message(request, principal, conversation_id, data, "inbound", None)
    return Response(msgspec.convert(dict(row), EndUserMessage), status_code=status)


async def _open(request: Request[Any, Any, Any], principal: Principal, conversation_id: uuid.UUID,
                presented: str | None) -> None:
    """404 unless the request carries this conversation's token and the conversation is the project's;
    the same answer either way, so a caller learns nothing about other conversations."""
    pool = ctx(request).pool
    secret = await project_secret.project_secret(pool, ctx(request).settings.secret_key, principal.project_id)
    if secret is None or not token.matches(secret, conversation_id, presented):
        raise Problem(404, NOT_FOUND)
    if await queries.get(pool, principal.project_id, conversation_id) is None:
        raise Problem(404, NOT_FOUND)


# Agents ------------------------------------------------------------------------------------------------------


@get(BASE)
async def list_conversations(
    request: Request[Any, Any, Any],
    project_id: uuid.UUID,
    status: Status | None = None,
    assignee_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    sort: Sort = "last_message_at",
    cursor: str | None = None,
    limit: int | None = None,
) -> Page[Conversation]:
    """Conversations, most recent activity first (or newest first with `sort=created_at`)."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    f = Filters(project_id)
    f.add("status = {}", status)
    f.add("assignee_id = {}", assignee_id)
    f.add("user_id = {}", user_id)
    rows = await queries.page(ctx(request).pool, f, sort, decode_cursor(cursor) if cursor else None, size)
    data = [msgspec.convert(dict(r), Conversation) for r in rows[:size]]
    if len(rows) <= size:
        return Page(data, None)
    last = data[-1]
    at = last.created_at if sort == "created_at" else last.last_message_at or last.created_at
    return Page(data, encode_cursor(at, last.id))


@get(BASE + "/{conversation_id:uuid}")
async def get_conversation(request: Request[Any, Any, Any], project_id: uuid.UUID,
                           conversation_id: uuid.UUID) -> Conversation:
    """One conversation."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get(ctx(request).pool, project_id, conversation_id)
    if row is None:
        raise Problem(404, NOT_FOUND)
    return msgspec.convert(dict(row), Conversation)


@patch(BASE + "/{conversation_id:uuid}")
async def update_conversation(request: Request[Any, Any, Any], project_id: uuid.UUID, conversation_id: uuid.UUID,
                              data: ConversationPatch) -> Conversation:
    """Close, reopen or (un)assign a conversation; audited in the same transaction."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    if not changes:
        raise Problem(422, "nothing to change: send status or assignee_id")
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.update(conn, project_id, conversation_id, changes)
        if row is None:
            raise Problem(404, NOT_FOUND)
        await audit.record(conn, principal, "conversation.updated", "conversation", conversation_id,
                           {"fields": sorted(changes)})
    return msgspec.convert(dict(row), Conversation)


@get(BASE + "/{conversation_id:uuid}/messages")
async def list_messages(request: Request[Any, Any, Any], project_id: uuid.UUID, conversation_id: uuid.UUID,
                        cursor: str | None = None, limit: int | None = None) -> Page[Message]:
    """The conversation's messages, oldest first, with who wrote them and when each was read."""
    require(await caller(request, project_id), project_id, level=READ)
    pool = ctx(request).pool
    size = limit_of(limit)
    if await queries.get(pool, project_id, conversation_id) is None:
        raise Problem(404, NOT_FOUND)
    rows = await queries.page_messages(pool, project_id, conversation_id, decode_cursor(cursor) if cursor else None,
                                       size)
    data = [msgspec.convert(dict(r), Message) for r in rows[:size]]
    return Page(data, encode_cursor(data[-1].created_at, data[-1].id) if len(rows) > size else None)


@post(BASE + "/{conversation_id:uuid}/messages", status_code=201)
async def reply(request: Request[Any, Any, Any], project_id: uuid.UUID, conversation_id: uuid.UUID,
                data: MessageIn) -> Response[Message]:
    """An agent's outbound reply: authored by the dashboard user (a key replies anonymously), counted,
    audited and announced as `message.created`."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    author = uuid.UUID(principal.actor_id) if principal.actor_type == "admin" else None
    row, status = await _add_message(request, principal, conversation_id, data, "outbound", author)
    return Response(msgspec.convert(dict(row), Message), status_code=status)


@post(BASE + "/{conversation_id:uuid}/read", status_code=200)
async def mark_read(request: Request[Any, Any, Any], project_id: uuid.UUID,
                    conversation_id: uuid.UUID) -> ReadReceipt:
    """Mark the end user's messages read (the read receipt they see); audited."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if await queries.get(conn, project_id, conversation_id) is None:
            raise Problem(404, NOT_FOUND)
        read = await queries.mark_read(conn, project_id, conversation_id, "inbound")
        await audit.record(conn, principal, "conversation.read", "conversation", conversation_id,
                           {"marked": len(read)})
        at = await conn.fetchval("SELECT now()")
    return ReadReceipt(conversation_id=conversation_id, marked=len(read), read_at=at)


# Both --------------------------------------------------------------------------------------------------------


async def _add_message(request: Request[Any, Any, Any], principal: Principal, conversation_id: uuid.UUID,
                       data: MessageIn, direction: str, author: uuid.UUID | None) -> tuple[asyncpg.Record, int]:
    """Store one message (scrubbed by the privacy rules) with its count and its `message.created` event,
    agents' replies audited; the stored row and 201, or the earlier row and 200 for a retry with the same `id`."""
    pid = principal.project_id
    pool = ctx(request).pool
    message_id = data.id or uuid7()
    if data.id is not None and (row := await queries.get_message(pool, pid, conversation_id, data.id)) is not None:
        return row, 200
    scrubber = ctx(request).scrubber
    rules, report = await scrub.rules_for(pool, pid), scrubber.report()
    body = await scrubber.run(len(data.body), lambda: scrub.scrub_message(rules, data.body, report))
    try:
        async with pool.acquire() as conn, conn.transaction():
            if not await queries.count_message(conn, pid, conversation_id, reopen=direction == "inbound"):
                raise Problem(404, NOT_FOUND)
            row = await queries.insert_message(conn, message_id, pid, conversation_id, direction, body, author,
                                               report.as_json() if report else {})
            if row is None:
                raise _Exists
            if direction == "outbound":
                await audit.record(conn, principal, "message.created", "message", message_id,
                                   {"conversation_id": str(conversation_id)})
            await enqueue(conn, pid, "message.created", _event(row))
    except _Exists:
        row = await queries.get_message(pool, pid, conversation_id, message_id)
        if row is None:
            raise Problem(409, "this id is already used") from None
        return row, 200
    return row, 201


def _event(message: asyncpg.Record) -> dict[str, Any]:
    """The `message.created` job: ids only; the worker reads the message itself."""
    return {"message_id": str(message["id"]), "conversation_id": str(message["conversation_id"]),
            "direction": message["direction"]}


def _retried(row: asyncpg.Record, data: ConversationIn, secret: bytes) -> Response[ConversationStarted]:
    """A retry gets the conversation (and its token) back only from the session that opened it: knowing
    a conversation id must not be enough to obtain its token."""
    if row["session_id"] != data.session_id:
        raise Problem(409, "this id is already used")
    return Response(_started(row, secret), status_code=200)


def _started(row: asyncpg.Record, secret: bytes) -> ConversationStarted:
    return ConversationStarted(
        id=row["id"], token=token.issue(secret, row["id"]), status=row["status"], subject=row["subject"],
        message_count=row["message_count"], last_message_at=row["last_message_at"], created_at=row["created_at"],
    )


ROUTES = [start_conversation, read_as_end_user, write_as_end_user, list_conversations, get_conversation,
          update_conversation, list_messages, reply, mark_read]
