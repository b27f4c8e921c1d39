"""What every project page shares: who is looking (`Desk`), CSRF-checked forms, the page response."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs

import msgspec
from litestar import Request
from litestar.response import Template

from cell.auth import ADMIN, READ, WRITE, Principal, require
from cell.context import caller, ctx
from common.problems import Problem
from common.signing import Actor
from common.web import CSRF_FIELD, PLAYER_SECURITY_HEADERS, SECURITY_HEADERS, same_token

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """What a page shows beside its data and may show a few seconds late (a project's name and region in the
    header): kept per process for `ttl` seconds, so a page costs its own query and no more. Bounded: past
    `size` entries it starts again empty."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._kept: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        """The value if it is at most `ttl` seconds old."""
        found = self._kept.get(key)
        if found is None or time.monotonic() - found[0] > self.ttl:
            return None
        return found[1]

    def put(self, key: K, value: V) -> V:
        """Keep `value`."""
        if len(self._kept) >= self.size:
            self._kept.clear()
        self._kept[key] = (time.monotonic(), value)
        return value


HEADERS: Recent[uuid.UUID, dict[str, Any]] = Recent(ttl=5.0)
"""Each project's id, name and region for the layout's header."""


@dataclass(frozen=True, slots=True)
class Desk:
    """Who is looking at which project: what every page's layout needs."""

    principal: Principal
    csrf: str
    project: dict[str, Any]

    @property
    def can_write(self) -> bool:
        return self.principal.level >= WRITE

    @property
    def is_admin(self) -> bool:
        return self.principal.level >= ADMIN

    def context(self, title: str, nav: str, **more: Any) -> dict[str, Any]:
        return {"title": title, "nav": nav, "project": self.project, "csrf": self.csrf,
                "can_write": self.can_write, "is_admin": self.is_admin, **more}


async def desk(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Desk:
    """The dashboard caller of a page: a signed-in member (the router checked the session) with READ."""
    actor: Actor | None = request.scope.get("state", {}).get("actor")
    if actor is None or actor.kind != "admin" or not actor.csrf:
        raise Problem(403, "dashboard pages are for signed-in members, through the router")
    principal = require(await caller(request, project_id), project_id, level=READ)
    project = HEADERS.get(project_id)
    if project is None:
        row = await ctx(request).pool.fetchrow(
            "SELECT id, name, region::text AS region FROM projects WHERE id = $1", project_id)
        if row is None:
            raise Problem(404, "no such project")
        project = HEADERS.put(project_id, dict(row))
    return Desk(principal, actor.csrf, project)


async def form_of(request: Request[Any, Any, Any], seen: Desk) -> dict[str, list[str]]:
    """The url-encoded form of an unsafe request, once its CSRF token matched the session's (else 403)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=2000)
    sent = request.headers.get("x-csrf-token") or next(iter(fields.get(CSRF_FIELD, [])), None)
    if not same_token(seen.csrf, sent):
        raise Problem(403, "this form is stale or did not come from the dashboard; reload the page and retry")
    return fields


def page(template: str, context: dict[str, Any], status: int = 200) -> Template:
    """A page's response with the dashboard's security headers (inline styles allowed only where a replay
    plays: see `PLAYER_SECURITY_HEADERS`). HTML whatever the handler's annotation: one that may also redirect
    (`-> Any`) would otherwise label the page JSON, and the browser show it as text."""
    headers = PLAYER_SECURITY_HEADERS if context.get("replays") else SECURITY_HEADERS
    return Template(template, context=context, status_code=status, headers=headers,
                    media_type="text/html; charset=utf-8")


def choice(value: str | None, kind: Any, name: str) -> Any:
    """A filter from the query string: empty means none; anything else must be one of the contract's values."""
    if not value:
        return None
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError:
        raise Problem(400, f"{name} is not one of the allowed values") from None
