"""`/app/`: sign-in, sign-up, sign-out, a forgotten password, the project list and "New project" — the router's
only pages.

They call the JSON API's own handlers (`router.auth.routes`, `router.projects.routes`) so a page can do
nothing the API would refuse, and show the API's problems as form errors. By the time a request arrives
here, `router.dashboard.gate` has turned the session cookie into the bearer token and checked CSRF.
"""

from __future__ import annotations

import contextlib
import secrets
from os import PathLike
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router

from common.keys import bearer
from common.problems import Problem
from common.web import (
    PRE_SESSION_COOKIE,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    STATIC,
    STATIC_PATH,
    csrf_token,
    page_problem_handler,
    template_config,
)
from router.auth import account, sessions
from router.auth import routes as auth
from router.dashboard import access
from router.members import routes as member_routes
from router.members.types import Accepted
from router.projects import routes as projects
from router.state import state

TEMPLATES = template_config(Path(__file__).parent / "templates")
SDK_DIST = Path(__file__).resolve().parents[2] / "sdk" / "js" / "dist"
"""The SDK's build output (the replay player, `player.js`), served beside the common static files when built."""

Form = Body(media_type=RequestEncodingType.URL_ENCODED)


class SignInForm(msgspec.Struct):
    """The sign-in form; `next` is the dashboard page to return to (an invitation link, a project page)."""

    email: str = ""
    password: str = ""
    next: str = ""


class SignUpForm(msgspec.Struct):
    """The sign-up form."""

    email: str = ""
    password: str = ""
    name: str = ""


class ForgotForm(msgspec.Struct):
    """The "Forgot your password?" form: where to send a reset link."""

    email: str = ""


class ResetForm(msgspec.Struct):
    """The page a reset link opens: the link's token, and the new password."""

    token: str = ""
    password: str = ""


class ProjectForm(msgspec.Struct):
    """The "New project" form."""

    name: str = ""
    region: str = ""


def _page(template: str, context: dict[str, Any], status: int = 200,
          cookies: list[Cookie] | None = None) -> Template:
    return Template(template, context=context, status_code=status, headers=SECURITY_HEADERS, cookies=cookies or [])


def _pre_session(request: Request[Any, Any, Any]) -> tuple[str, list[Cookie]]:
    """The double-submit CSRF token of the signed-out forms, and the cookie to set when it is new."""
    token = request.cookies.get(PRE_SESSION_COOKIE)
    if token:
        return token, []
    token = secrets.token_urlsafe(24)
    secure = state(request).settings.cookie_secure
    return token, [Cookie(PRE_SESSION_COOKIE, value=token, path="/app/", httponly=True, samesite="strict",
                          secure=secure)]


def _session_cookie(request: Request[Any, Any, Any], token: str | None) -> Cookie:
    st = state(request)
    return Cookie(SESSION_COOKIE, value=token or "", path="/app/", httponly=True, samesite="lax",
                  secure=st.settings.cookie_secure, max_age=st.settings.session_ttl_seconds if token else 0)


def _problem_text(problem: Problem) -> list[str]:
    found = [f"{e.message}" for e in (problem.errors or [])]
    return [problem.detail or problem.title, *found]


async def _signed_in(request: Request[Any, Any, Any]) -> tuple[sessions.Session, str] | None:
    token = bearer(request.headers.get("authorization"))
    if token is None:
        return None
    try:
        return await sessions.resolve(state(request).pool, token), token
    except Problem:
        return None


def _back_to(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site, nor `//host`)."""
    if target and target.startswith("/app/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/app/"


def _sign_in_page(request: Request[Any, Any, Any], errors: list[str], email: str = "", status: int = 200,
                  *, signup: bool = False, name: str = "", back: str | None = None) -> Template:
    token, cookies = _pre_session(request)
    context = {"title": "Create an account" if signup else "Sign in", "csrf_form": token, "errors": errors,
               "email": email, "name": name, "next": _back_to(back or request.query_params.get("next"))}
    stale = [_session_cookie(request, None)] if request.cookies.get(SESSION_COOKIE) else []
    return _page("signup.html" if signup else "signin.html", context, status, [*cookies, *stale])


async def _projects_page(request: Request[Any, Any, Any], token: str, errors: list[str] | None = None,
                         form: ProjectForm | None = None, status: int = 200) -> Template:
    listed: projects.ProjectList = await projects.list_projects.fn(request)
    me: auth.User = await auth.me.fn(request)
    regions = sorted(state(request).settings.cells)
    context = {"title": "Projects", "projects": listed.data, "regions": regions, "errors": errors or [],
               "form": form or ProjectForm(region=regions[0]), "csrf": csrf_token(token), "user_email": me.email}
    return _page("projects.html", context, status)


@get("/app/", include_in_schema=False)
async def home(request: Request[Any, Any, Any]) -> Template:
    """Signed out: the sign-in page. Signed in: the user's projects and the "New project" form."""
    found = await _signed_in(request)
    if found is None:
        return _sign_in_page(request, [])
    return await _projects_page(request, found[1])


@post("/app/signin", include_in_schema=False)
async def sign_in(request: Request[Any, Any, Any], data: SignInForm = Form) -> Response[Any]:
    """Check the password with the API's login (its rate limits included) and set the session cookie."""
    try:
        out: auth.AuthOut = await auth.login.fn(request, auth.LoginIn(data.email, data.password))
    except Problem as problem:
        return _sign_in_page(request, _problem_text(problem), data.email, problem.status, back=data.next)
    return Redirect(_back_to(data.next), status_code=303, cookies=[_session_cookie(request, out.token)])


@get("/app/signup", include_in_schema=False)
async def sign_up_page(request: Request[Any, Any, Any]) -> Template:
    """The "Create an account" form."""
    return _sign_in_page(request, [], signup=True)


@post("/app/signup", include_in_schema=False)
async def sign_up(request: Request[Any, Any, Any], data: SignUpForm = Form) -> Response[Any]:
    """Create the account with the API's signup and sign it in."""
    try:
        out: auth.AuthOut = await auth.signup.fn(request, auth.SignupIn(data.email, data.password, data.name))
    except ValueError as exc:
        return _sign_in_page(request, [str(exc).split(" - at ")[0]], data.email, 422, signup=True, name=data.name)
    except Problem as problem:
        return _sign_in_page(request, _problem_text(problem), data.email, problem.status, signup=True,
                             name=data.name)
    return Redirect("/app/", status_code=303, cookies=[_session_cookie(request, out.token)])


@post("/app/signout", include_in_schema=False)
async def sign_out(request: Request[Any, Any, Any]) -> Redirect:
    """End the session with the API's logout (audited like it) and drop the cookie; a session already ended
    just loses its cookie."""
    if bearer(request.headers.get("authorization")) is not None:
        with contextlib.suppress(Problem):
            await auth.logout.fn(request)
    return Redirect("/app/", status_code=303, cookies=[_session_cookie(request, None)])


def _form_csrf(request: Request[Any, Any, Any]) -> tuple[str, list[Cookie]]:
    """The CSRF token a form of a page anyone may open must carry, as the gate will expect it: the session's
    when a session cookie came along, else the signed-out double-submit token."""
    token = bearer(request.headers.get("authorization"))
    return (csrf_token(token), []) if token is not None else _pre_session(request)


def _forgot_page(request: Request[Any, Any, Any], errors: list[str], email: str = "", status: int = 200,
                 *, sent: bool = False) -> Template:
    csrf, cookies = _form_csrf(request)
    context = {"title": "Reset your password", "csrf_form": csrf, "errors": errors, "email": email, "sent": sent}
    return _page("forgot_password.html", context, status, cookies)


@get("/app/forgot-password", include_in_schema=False)
async def forgot_password_page(request: Request[Any, Any, Any]) -> Template:
    """The "Forgot your password?" form: an email address to send a reset link to."""
    return _forgot_page(request, [])


@post("/app/forgot-password", include_in_schema=False)
async def forgot_password(request: Request[Any, Any, Any], data: ForgotForm = Form) -> Template:
    """Ask for a reset link with the API's handler; the page says the same whether or not the address has an
    account (as the API does)."""
    try:
        await account.request_reset.fn(request, account.ResetIn(email=data.email.strip()))
    except ValueError as exc:
        return _forgot_page(request, [str(exc).split(" - at ")[0]], data.email, 422)
    except Problem as problem:
        return _forgot_page(request, _problem_text(problem), data.email, problem.status)
    return _forgot_page(request, [], data.email, sent=True)


def _reset_page(request: Request[Any, Any, Any], token: str, errors: list[str], status: int = 200) -> Template:
    csrf, cookies = _form_csrf(request)
    context = {"title": "Choose a new password", "csrf_form": csrf, "errors": errors, "token": token}
    return _page("reset_password.html", context, status, cookies)


@get(account.RESET_PATH, include_in_schema=False)
async def reset_password_page(request: Request[Any, Any, Any], token: str = "") -> Template:
    """The page a reset email's link opens: a new password for the account (a GET changes nothing, as mail
    scanners follow links)."""
    return _reset_page(request, token[:200], [])


@post(account.RESET_PATH, include_in_schema=False)
async def reset_password(request: Request[Any, Any, Any], data: ResetForm = Form) -> Response[Any]:
    """Set the new password with the API's handler (once, before the link expires): every session of the
    account ends and this browser is signed in with a new one."""
    try:
        out: auth.AuthOut = await account.complete_reset.fn(
            request, account.ResetCompleteIn(token=data.token, new_password=data.password))
    except ValueError as exc:
        return _reset_page(request, data.token[:200], [str(exc).split(" - at ")[0]], 422)
    except Problem as problem:
        return _reset_page(request, data.token[:200], _problem_text(problem), problem.status)
    return Redirect("/app/", status_code=303, cookies=[_session_cookie(request, out.token)])


@post("/app/projects", include_in_schema=False)
async def new_project(request: Request[Any, Any, Any], data: ProjectForm = Form) -> Response[Any]:
    """Create a project in the chosen region with the API's own handler, then open its inbox."""
    found = await _signed_in(request)
    if found is None:
        return Redirect("/app/", status_code=303)
    try:
        created: projects.Project = await projects.create_project.fn(request, projects.ProjectIn(data.name,
                                                                                                 data.region))
    except ValueError as exc:
        return await _projects_page(request, found[1], [str(exc).split(" - at ")[0]], data, 422)
    except Problem as problem:
        return await _projects_page(request, found[1], _problem_text(problem), data, problem.status)
    return Redirect(f"/app/projects/{created.id}/", status_code=303)


@get("/app/invitations/{token:str}", include_in_schema=False)
async def invitation(request: Request[Any, Any, Any], token: str) -> Template:
    """The link an invitation email holds: signed out, the sign-in page (back here after); signed in, a form
    that accepts it as this account (a GET never accepts: mail scanners follow links)."""
    found = await _signed_in(request)
    if found is None:
        return _sign_in_page(request, [], back=f"/app/invitations/{token}")
    me: auth.User = await auth.me.fn(request)
    context = {"title": "Join a project", "token": token, "csrf": csrf_token(found[1]), "errors": [],
               "user_email": me.email}
    return _page("invitation.html", context)


@post("/app/invitations/{token:str}", include_in_schema=False)
async def accept_invitation(request: Request[Any, Any, Any], token: str) -> Response[Any]:
    """Accept the invitation with the API's handler, then open the project."""
    found = await _signed_in(request)
    if found is None:
        return Redirect(f"/app/?next=/app/invitations/{token}", status_code=303)
    try:
        accepted: Accepted = await member_routes.accept_invitation.fn(request, token)
    except Problem as problem:
        me: auth.User = await auth.me.fn(request)
        context = {"title": "Join a project", "token": token, "csrf": csrf_token(found[1]),
                   "errors": _problem_text(problem), "user_email": me.email}
        return _page("invitation.html", context, problem.status)
    return Redirect(f"/app/projects/{accepted.project_id}/", status_code=303)


def _static() -> Any:
    directories: list[str | PathLike[str] | Path] = [STATIC, *([SDK_DIST] if SDK_DIST.is_dir() else [])]
    return create_static_files_router(STATIC_PATH, directories=directories, name="dashboard-static",
                                      include_in_schema=False)


ROUTES = [Router(path="/", exception_handlers={Problem: page_problem_handler}, route_handlers=[
    home, sign_in, sign_up_page, sign_up, sign_out, forgot_password_page, forgot_password, reset_password_page,
    reset_password, new_project, invitation, accept_invitation, *access.ROUTES]),
          _static()]
