"""What every project page shares: who is looking (`Desk`), CSRF-checked forms, the page response."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import msgspec
from litestar import Request
from litestar.response import Template

from cell.auth import ADMIN, READ, WRITE, Principal, require
from cell.context import caller, ctx
from common.problems import Problem
from common.signing import Actor
from common.web import CSRF_FIELD, SECURITY_HEADERS, same_token


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
    row = await ctx(request).pool.fetchrow("SELECT id, name, region::text AS region FROM projects WHERE id = $1",
                                           project_id)
    if row is None:
        raise Problem(404, "no such project")
    return Desk(principal, actor.csrf, dict(row))


async def form_of(request: Request[Any, Any, Any], seen: Desk) -> dict[str, list[str]]:
    """The url-encoded form of an unsafe request, once its CSRF token matched the session's (else 403)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=2000)
    sent = request.headers.get("x-csrf-token") or next(iter(fields.get(CSRF_FIELD, [])), None)
    if not same_token(seen.csrf, sent):
        raise Problem(403, "this form is stale or did not come from the dashboard; reload the page and retry")
    return fields


def page(template: str, context: dict[str, Any], status: int = 200) -> Template:
    return Template(template, context=context, status_code=status, headers=SECURITY_HEADERS)


def choice(value: str | None, kind: Any, name: str) -> Any:
    """A filter from the query string: empty means none; anything else must be one of the contract's values."""
    if not value:
        return None
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError:
        raise Problem(400, f"{name} is not one of the allowed values") from None
