"""What the dashboard's two renderers share: the layout, CSS and template pieces, the session cookie and CSRF.

The router renders the control-plane pages (sign-in, projects) and each cell renders the pages of its own
projects; both build their Jinja engine here, with their own templates first and the common layout
(`common/web/templates`) after, so a page looks the same whichever service drew it. Static files (CSS,
the vendored htmx 2) are served by the router under `/app/static/`: they hold no customer data.

CSRF: the token of a session is HMAC-SHA256 keyed by the session's own `rs_` token. Only someone who holds
the session can compute it, no server secret or storage is needed, and every router process agrees. The
router checks it on every unsafe request that rides on the cookie, and passes it to the cell inside the
signed actor assertion; the cell renders it into its forms and checks the form's copy against it again.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader
from litestar import Request, Response
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from common.problems import Problem, problem_handler

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
STATIC_PATH = "/app/static"

SESSION_COOKIE = "relay_session"
"""The cookie holding the browser's `rs_` session token (HttpOnly, SameSite=Lax, Secure outside `relay dev`)."""
CSRF_FIELD = "csrf"
"""The form field (or `X-CSRF-Token` header, for htmx) carrying the CSRF token."""
CSRF_HEADER = b"x-csrf-token"
PRE_SESSION_COOKIE = "relay_csrf"
"""Double-submit cookie for the forms shown before there is a session (sign-in, sign-up)."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""No inline script or style anywhere: htmx is configured (meta `htmx-config`) not to inject its own styles."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Headers of every dashboard page."""

PLAYER_SECURITY_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY.replace(
        "style-src 'self';", "style-src 'self' 'unsafe-inline';"),
}
"""Headers of a page that plays a replay: the player (rrweb) injects its stylesheet and rebuilds the recorded
page's own `<style>`s and style attributes in its iframe, so styles may be inline there; scripts stay strict."""

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def template_config(own: Path) -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja templates: the service's own directory first, then the common layout and pieces; autoescaped,
    compiled once (templates ship with the code, so nothing checks their files again per request)."""
    environment = Environment(loader=FileSystemLoader([own, TEMPLATES]), autoescape=True, auto_reload=False)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def csrf_token(session_token: str) -> str:
    """The CSRF token bound to a session (see the module docstring)."""
    return hmac.new(session_token.encode(), b"relay-dashboard-csrf", hashlib.sha256).hexdigest()


def same_token(expected: str | None, given: str | None) -> bool:
    """Whether the token a form or header carried is the expected one (constant time)."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def cookie(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...], name: str) -> str | None:
    """One cookie's value from raw ASGI headers (the proxy's hot path has no Request object)."""
    for key, value in headers:
        if key != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name and v:
                return v
    return None


def form_token(body: bytes, content_type: str) -> str | None:
    """The CSRF field of a url-encoded form body (what plain forms and htmx send)."""
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return None
    values = parse_qs(body.decode("latin-1"), max_num_fields=2000).get(CSRF_FIELD)
    return values[0] if values else None


def wants_html(accept: str | None) -> bool:
    """Whether the client is a browser navigating (it asks for HTML), not a script wanting a problem document."""
    return bool(accept) and "text/html" in str(accept)


def problem_page(status: int, title: str, detail: str | None) -> bytes:
    """A problem as a small page in the dashboard's style, for a browser that navigated to it."""
    text = html.escape(detail or "")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{status} {html.escape(title)} · Relay</title>"
        f'<link rel="stylesheet" href="{STATIC_PATH}/relay.css"></head><body>'
        '<header class="top"><a class="brand" href="/app/">Relay</a></header><main>'
        f'<section class="card narrow"><h1>{html.escape(title)}</h1><p>{text}</p>'
        '<p><a href="/app/">Back to your projects</a></p></section></main></body></html>'
    ).encode()


def page_problem_handler(request: Request[Any, Any, Any], exc: Problem) -> Response[bytes]:
    """Litestar handler for `Problem` on dashboard pages: a page for a browser, the problem document for
    anything else (htmx, scripts, tests reading `detail`)."""
    if not wants_html(request.headers.get("accept")) or request.headers.get("hx-request"):
        return problem_handler(request, exc)
    return Response(problem_page(exc.status, exc.title, exc.detail), status_code=exc.status,
                    media_type="text/html; charset=utf-8", headers={**exc.headers, **SECURITY_HEADERS})
