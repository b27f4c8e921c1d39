"""The resources a cell process holds, opened and closed by the app's lifespan."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from litestar import Request
from redis.asyncio import Redis

from cell.auth import Authenticator, Principal
from cell.enrichment.index import Index
from cell.interactions.writer import Writer
from cell.privacy.scrub import Scrubber
from cell.settings import CellSettings
from cell.storage import ObjectStore


@dataclass
class CellContext:
    """What handlers reach through `ctx(request)`."""

    settings: CellSettings
    pool: asyncpg.Pool
    redis: Redis
    auth: Authenticator
    store: ObjectStore
    ingest: Writer
    """The group commit of ingested interactions."""
    scrubber: Scrubber
    """Per-request scrubbing budgets, and the thread pool large bodies are scrubbed on."""
    index: Index
    """The similarity index this database offers (pgvector's HNSW or an exact scan), read at start."""


def ctx(request: Request[Any, Any, Any]) -> CellContext:
    """The running cell's resources."""
    context: CellContext = request.app.state.ctx
    return context


async def caller(request: Request[Any, Any, Any], project_id: uuid.UUID | None = None) -> Principal:
    """The authenticated caller of this request (401/404/421 problems when there is none)."""
    return await ctx(request).auth.principal(request.scope, project_id)  # type: ignore[arg-type]
