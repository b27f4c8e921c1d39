"""Roadmap endpoints: the public roadmap for end users; items, their order and their feedback for the team."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, patch, post

from cell import audit
from cell.auth import READ, WRITE, Principal, require
from cell.context import caller, ctx
from cell.feedback.queries import encode_rank_cursor
from cell.interactions.queries import Filters
from cell.paging import Page, limit_of
from cell.roadmap import queries
from cell.roadmap.types import (
    FeedbackLinkIn,
    LinkedFeedback,
    LinkedFeedbackReceipt,
    PublicRoadmapItem,
    ReorderIn,
    RoadmapItem,
    RoadmapItemIn,
    RoadmapItemPatch,
    RoadmapStatus,
    Visibility,
)
from common.ids import uuid7
from common.problems import Problem

NO_ITEM = "no such roadmap item"


@get("/v1/ingest/roadmap")
async def public_roadmap(request: Request[Any, Any, Any], status: RoadmapStatus | None = None,
                         cursor: str | None = None, limit: int | None = None) -> Page[PublicRoadmapItem]:
    """The public roadmap in the team's order; private items never leave the cell here."""
    principal = require(await caller(request), ingest=True)
    size = limit_of(limit)
    f = Filters(principal.project_id)
    f.clauses.append("visibility = 'public'")
    f.add("status = {}", status)
    rows = await queries.page(ctx(request).pool, f, cursor, size, columns=queries.PUBLIC_COLUMNS)
    data = [msgspec.convert(dict(r), PublicRoadmapItem) for r in rows[:size]]
    return Page(data, queries.next_cursor(rows, size))


@get("/v1/projects/{project_id:uuid}/roadmap-items")
async def list_items(request: Request[Any, Any, Any], project_id: uuid.UUID, visibility: Visibility | None = None,
                     status: RoadmapStatus | None = None, cursor: str | None = None,
                     limit: int | None = None) -> Page[RoadmapItem]:
    """Every roadmap item in order, public and private."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    f = Filters(project_id)
    f.add("visibility = {}", visibility)
    f.add("status = {}", status)
    rows = await queries.page(ctx(request).pool, f, cursor, size)
    data = [msgspec.convert(dict(r), RoadmapItem) for r in rows[:size]]
    return Page(data, queries.next_cursor(rows, size))


@get("/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}")
async def get_item(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID) -> RoadmapItem:
    """One roadmap item."""
    require(await caller(request, project_id), project_id, level=READ)
    row = await queries.get(ctx(request).pool, project_id, item_id)
    if row is None:
        raise Problem(404, NO_ITEM)
    return msgspec.convert(dict(row), RoadmapItem)


@post("/v1/projects/{project_id:uuid}/roadmap-items", status_code=201)
async def create_item(request: Request[Any, Any, Any], project_id: uuid.UUID, data: RoadmapItemIn) -> RoadmapItem:
    """Add an item; without `sort_order` it goes last."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    item_id = uuid7()
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.insert(conn, item_id, project_id, msgspec.structs.asdict(data))
        await audit.record(conn, principal, "roadmap_item.created", "roadmap_item", item_id,
                           {"visibility": data.visibility, "status": data.status})
    return msgspec.convert(dict(row), RoadmapItem)


@patch("/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}")
async def update_item(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                      data: RoadmapItemPatch) -> RoadmapItem:
    """Change title, description, visibility, status, sort_order or eta; audited in the same transaction."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    if not changes:
        raise Problem(422, "nothing to change: send title, description, visibility, status, sort_order or eta")
    meta: dict[str, Any] = {"fields": sorted(changes)}
    meta |= {k: changes[k] for k in ("visibility", "status") if k in changes}
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        row = await queries.update(conn, project_id, item_id, changes)
        if row is None:
            raise Problem(404, NO_ITEM)
        await audit.record(conn, principal, "roadmap_item.updated", "roadmap_item", item_id, meta)
    return msgspec.convert(dict(row), RoadmapItem)


@delete("/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}", status_code=204)
async def delete_item(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID) -> None:
    """Remove an item and its links to feedback (the feedback items stay)."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if not await queries.delete(conn, project_id, item_id):
            raise Problem(404, NO_ITEM)
        await audit.record(conn, principal, "roadmap_item.deleted", "roadmap_item", item_id)


@post("/v1/projects/{project_id:uuid}/roadmap-items/reorder", status_code=200)
async def reorder(request: Request[Any, Any, Any], project_id: uuid.UUID, data: ReorderIn) -> Page[RoadmapItem]:
    """Put `ids` first, in that order, the other items after them as they were; all or nothing.

    Answers with the whole roadmap in its new order.
    """
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        rows = await queries.reorder(conn, project_id, data.ids)
        if rows is None:
            raise Problem(404, NO_ITEM)
        await audit.record(conn, principal, "roadmap_item.reordered", "roadmap", project_id,
                           {"ids": [str(i) for i in data.ids]})
    return Page([msgspec.convert(dict(r), RoadmapItem) for r in rows], None)


@get("/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback")
async def list_feedback(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                        cursor: str | None = None, limit: int | None = None) -> Page[LinkedFeedback]:
    """The feedback items a roadmap item answers, most voted first."""
    require(await caller(request, project_id), project_id, level=READ)
    size = limit_of(limit)
    pool = ctx(request).pool
    if await queries.get(pool, project_id, item_id) is None:
        raise Problem(404, NO_ITEM)
    rows = await queries.page_feedback(pool, project_id, item_id, cursor, size)
    data = [msgspec.convert(dict(r), LinkedFeedback) for r in rows[:size]]
    more = len(rows) > size
    return Page(data, encode_rank_cursor(data[-1].vote_count, data[-1].feedback_item_id) if more else None)


@post("/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback", status_code=201)
async def link_feedback(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                        data: FeedbackLinkIn) -> Response[LinkedFeedbackReceipt]:
    """Say that a roadmap item answers a feedback item (201); saying it again returns the link with 200."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        linked = await queries.link_feedback(conn, project_id, item_id, data.feedback_item_id)
        if linked is None:
            raise Problem(404, "no such roadmap item or feedback item")
        row, count, made = linked
        if made:
            await audit.record(conn, principal, "roadmap_item.linked", "roadmap_item", item_id,
                               {"feedback_item_id": str(data.feedback_item_id)})
    receipt = msgspec.convert({**dict(row), "linked_feedback_count": count}, LinkedFeedbackReceipt)
    return Response(receipt, status_code=201 if made else 200)


async def _unlink(request: Request[Any, Any, Any], principal: Principal, project_id: uuid.UUID,
                  item_id: uuid.UUID, feedback_item_id: uuid.UUID) -> None:
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if await queries.unlink_feedback(conn, project_id, item_id, feedback_item_id) is None:
            raise Problem(404, "no such link")
        await audit.record(conn, principal, "roadmap_item.unlinked", "roadmap_item", item_id,
                           {"feedback_item_id": str(feedback_item_id)})


@delete("/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback/{feedback_item_id:uuid}",
        status_code=204)
async def unlink_feedback(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                          feedback_item_id: uuid.UUID) -> None:
    """Remove the link between a roadmap item and a feedback item."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    await _unlink(request, principal, project_id, item_id, feedback_item_id)


@delete("/v1/projects/{project_id:uuid}/roadmap-items/{item_id:uuid}/feedback", status_code=204)
async def unlink_feedback_by_body(request: Request[Any, Any, Any], project_id: uuid.UUID, item_id: uuid.UUID,
                                  data: FeedbackLinkIn) -> None:
    """The same, naming the feedback item in the body (`DELETE …/feedback {feedback_item_id}`)."""
    principal = require(await caller(request, project_id), project_id, level=WRITE)
    await _unlink(request, principal, project_id, item_id, data.feedback_item_id)


ROUTES = [public_roadmap, list_items, get_item, create_item, update_item, delete_item, reorder, list_feedback,
          link_feedback, unlink_feedback, unlink_feedback_by_body]
