"""`/app/projects/{id}/keys…` and `…/members…`: the project pages about access, which the router answers.

Keys are reserved in the router's key directory before the cell mints them, and memberships live only in
the router's control database, so these pages are the router's, not the cell's: `router/app.py` sends
these two sections here instead of to the project's cell. They call the API's own handlers (roles as
there: admin for changes, owners for owners). A new key is shown once, on the page that made it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from common.keys import bearer
from common.problems import Problem
from common.web import SECURITY_HEADERS, csrf_token
from router.members import routes as member_routes
from router.members.types import InvitationList, MemberIn, MemberList
from router.projects import routes as projects

SECTIONS = frozenset({"keys", "members", "invitations"})
"""The first path segments under `/app/projects/{id}/` that the router renders itself."""

Form = Body(media_type=RequestEncodingType.URL_ENCODED)


class KeyForm(msgspec.Struct):
    """The "Create key" form of the settings page (scopes may repeat)."""

    name: str = ""
    scopes: list[str] | str = msgspec.field(default_factory=list)


class MemberForm(msgspec.Struct):
    """The "Add member" form."""

    email: str = ""
    role: str = "viewer"


async def _frame(request: Request[Any, Any, Any], project_id: uuid.UUID, title: str, **more: Any) -> dict[str, Any]:
    """The layout's context: the project as the API shows it to this member (404 to anyone else)."""
    found: projects.Project = await projects.get_project.fn(request, project_id)
    token = bearer(request.headers.get("authorization")) or ""
    return {"title": title, "nav": "settings", "csrf": csrf_token(token), "errors": [],
            "project": {"id": found.id, "name": found.name, "region": found.region}, "role": found.role, **more}


def _page(template: str, context: dict[str, Any], status: int = 200) -> Template:
    return Template(template, context=context, status_code=status, headers=SECURITY_HEADERS)


def _problem_text(problem: Problem) -> list[str]:
    return [problem.detail or problem.title, *(e.message for e in problem.errors or [])]


@post("/app/projects/{project_id:uuid}/keys", include_in_schema=False)
async def create_key(request: Request[Any, Any, Any], project_id: uuid.UUID, data: KeyForm = Form) -> Template:
    """Create a key with the API's handler and show it, this once."""
    scopes = [data.scopes] if isinstance(data.scopes, str) else data.scopes
    try:
        key_in = msgspec.convert({"name": data.name, "scopes": scopes}, projects.KeyIn)
    except msgspec.ValidationError as exc:
        return _page("key_created.html", await _frame(request, project_id, "API key", errors=[str(exc)]), 422)
    answer: Response[bytes] = await projects.create_key.fn(request, project_id, key_in)
    body = msgspec.json.decode(answer.content) if isinstance(answer.content, bytes) else {}
    status = answer.status_code or 500
    if status != 201:
        message = body.get("detail") or body.get("title") or "the key was not created"
        return _page("key_created.html", await _frame(request, project_id, "API key", errors=[message]),
                     status)
    return _page("key_created.html", await _frame(request, project_id, "API key", key=body), 201)


@post("/app/projects/{project_id:uuid}/keys/{key_id:uuid}/revoke", include_in_schema=False)
async def revoke_key(request: Request[Any, Any, Any], project_id: uuid.UUID, key_id: uuid.UUID) -> Redirect:
    """Revoke a key with the API's handler (every router at once, the cell within a second)."""
    await projects.revoke_key.fn(request, project_id, key_id)
    return Redirect(f"/app/projects/{project_id}/settings#keys", status_code=303)


async def _members_page(request: Request[Any, Any, Any], project_id: uuid.UUID, errors: list[str] | None = None,
                        status: int = 200) -> Template:
    listed: MemberList = await member_routes.list_members.fn(request, project_id)
    context = await _frame(request, project_id, "Members", members=listed.data,
                           roles=("viewer", "agent", "admin", "owner"))
    context["errors"] = errors or []
    context["can_manage"] = projects.ROLE_LEVEL.get(context["role"] or "", 0) >= projects.ROLE_LEVEL["admin"]
    open_: InvitationList | None = (await member_routes.list_invitations.fn(request, project_id)
                                    if context["can_manage"] else None)
    context["invitations"] = open_.data if open_ is not None else []
    return _page("members.html", context, status)


@get("/app/projects/{project_id:uuid}/members", include_in_schema=False)
async def members(request: Request[Any, Any, Any], project_id: uuid.UUID) -> Template:
    """Everyone with a role in the project; admins add and remove people."""
    return await _members_page(request, project_id)


@post("/app/projects/{project_id:uuid}/members", include_in_schema=False)
async def add_member(request: Request[Any, Any, Any], project_id: uuid.UUID, data: MemberForm = Form) -> Any:
    """Invite a person with the API's handler (an email with a one-time link; they accept it signed in)."""
    try:
        member = msgspec.convert({"email": data.email.strip(), "role": data.role}, MemberIn)
        await member_routes.invite_member.fn(request, project_id, member)
    except msgspec.ValidationError as exc:
        return await _members_page(request, project_id, [str(exc)], 422)
    except Problem as problem:
        if problem.status == 404:
            raise
        return await _members_page(request, project_id, _problem_text(problem), problem.status)
    return Redirect(f"/app/projects/{project_id}/members", status_code=303)


async def _changed(request: Request[Any, Any, Any], project_id: uuid.UUID, change: Awaitable[Any]) -> Any:
    """Await a membership change made with the API's handler, then show the members page again; a refusal is
    shown on it (a 404 stays one: nothing of the project is told to a stranger)."""
    try:
        await change
    except Problem as problem:
        if problem.status == 404:
            raise
        return await _members_page(request, project_id, _problem_text(problem), problem.status)
    return Redirect(f"/app/projects/{project_id}/members", status_code=303)


@post("/app/projects/{project_id:uuid}/invitations/{invitation_id:uuid}/revoke", include_in_schema=False)
async def revoke_invitation(request: Request[Any, Any, Any], project_id: uuid.UUID, invitation_id: uuid.UUID) -> Any:
    """Revoke an open invitation with the API's handler: its link stops working."""
    return await _changed(request, project_id, member_routes.revoke_invitation.fn(request, project_id, invitation_id))


@post("/app/projects/{project_id:uuid}/members/{user_id:uuid}/remove", include_in_schema=False)
async def remove_member(request: Request[Any, Any, Any], project_id: uuid.UUID, user_id: uuid.UUID) -> Any:
    """Remove a member with the API's handler (the last owner stays)."""
    return await _changed(request, project_id, member_routes.remove_member.fn(request, project_id, user_id))


ROUTES = [create_key, revoke_key, members, add_member, revoke_invitation, remove_member]
