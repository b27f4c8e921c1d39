"""RFC 9457 problem details, for every error either service returns.

One `Problem` exception type carries status, title, detail and the optional
extensions of the contract (`errors`, `region`); Litestar exception handlers
turn it, validation failures, unknown routes and framework errors into
`application/problem+json`, so no error ever leaves as HTML or a stack trace.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import asyncpg
import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("relay.errors")
SEALED_CANNOT_MOVE = "Sealed Value Cannot Move"
"""Title of a cell's refusal to let a sealed value travel in a move between regions (it does not open in
the source, or arrives still sealed in the target, cell/sealed.py): no retry mends that, so the router gives
the move up (router/moves/wire.py)."""


def type_uri(title: str) -> str:
    """The problem `type` of a title: what a caller matches on rather than the words of a detail."""
    return "https://relay.dev/problems/" + title.lower().replace(" ", "-").replace("'", "")


class FieldError(msgspec.Struct, frozen=True):
    """One invalid field: a JSON pointer into the request body and what is wrong there."""

    pointer: str
    message: str


class ProblemBody(msgspec.Struct, omit_defaults=True):
    """The problem+json document."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
    region: str | None = None
    project_id: str | None = None


class Problem(Exception):
    """An error the caller should see, with its HTTP status."""

    def __init__(
        self, status: int, detail: str | None = None, *, title: str | None = None,
        errors: list[FieldError] | None = None, region: str | None = None,
        retry_after: int | None = None, headers: dict[str, str] | None = None,
        project_id: str | None = None,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors
        self.region = region
        self.project_id = project_id
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)

    def body(self, instance: str | None = None) -> ProblemBody:
        """The problem document for this error."""
        return ProblemBody(
            type=type_uri(self.title), title=self.title, status=self.status,
            detail=self.detail, instance=instance, errors=self.errors, region=self.region,
            project_id=self.project_id,
        )


def encode(problem: Problem, instance: str | None = None) -> bytes:
    """Serialized problem+json, for code paths outside Litestar (the router's raw proxy)."""
    return msgspec.json.encode(problem.body(instance))


_MISSING = re.compile(r"missing required field `([^`]+)`")
_MISSING_PARAM = re.compile(r"Missing required (query|header|cookie|path) parameter '([^']+)'")
_AT = re.compile(r" - at `\$([^`]*)`")


def pointer_of(path: str) -> str:
    """`.content.text[0]` (msgspec's path) → `/content/text/0` (a JSON pointer)."""
    parts = re.findall(r"\.([^.\[]+)|\[(\d+)\]", path)
    return "".join("/" + (name or index).replace("~", "~0").replace("/", "~1") for name, index in parts)


def from_validation(message: str) -> Problem:
    """A 422 from a msgspec validation message such as "Expected `int` - at `$.limit`"."""
    # Errors raised inside nested structs carry one " - at `$…`" per level, innermost first.
    paths = _AT.findall(message)
    pointer = "".join(pointer_of(p) for p in reversed(paths))
    text = _AT.split(message, maxsplit=1)[0] if paths else message
    return Problem(422, "request body has invalid fields", errors=[FieldError(pointer, text)])


def _response(problem: Problem, request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(
        content=encode(problem, request.url.path), status_code=problem.status,
        media_type=PROBLEM_JSON, headers=problem.headers,
    )


def problem_handler(request: Request[Any, Any, Any], exc: Problem) -> Response[bytes]:
    """Litestar handler for `Problem`."""
    return _response(exc, request)


def validation_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    """Litestar's validation errors: malformed JSON is 400, well-formed but invalid is 422 with pointers."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors: list[FieldError] = []
    for item in extra:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid"))
        # Errors raised inside nested structs come as "x` - at `$.outer" (innermost first): unfold them.
        key = ".".join(reversed(re.split(r"` - at `\$\.?", str(item.get("key", "")))))
        if item.get("source") == "body" or key == "data" or key.startswith("data."):
            path = "" if key == "data" else key.removeprefix("data.")
            pointer = pointer_of("." + path) if path else ""
            missing = _MISSING.search(message)
            if missing:
                pointer += "/" + missing.group(1)
        else:
            pointer = f"/{key}" if key else ""
        errors.append(FieldError(pointer, message))
    missing = _MISSING_PARAM.match(exc.detail or "")
    if not errors and missing:
        errors.append(FieldError(f"/{missing.group(2)}", f"missing required {missing.group(1)} parameter"))
    if not errors:
        return _response(Problem(400, exc.detail or "malformed request body"), request)
    return _response(Problem(422, "request has invalid fields", errors=errors), request)


def http_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Framework HTTP errors (404 unknown route, 405, 400 malformed body …) as problems."""
    status = exc.status_code
    if isinstance(exc, NotFoundException):
        detail = "no such resource"
    elif status == 400:
        detail = "malformed request body" if "body" in (exc.detail or "").lower() else exc.detail
    else:
        detail = exc.detail
    return _response(Problem(status, detail, headers=dict(exc.headers or {})), request)


def internal_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Any other exception is a bug: log it with its traceback, answer a bodyless 500 problem."""
    log.error("unhandled error on %s %s", request.method, request.scope.get("path_template", "?"),
              exc_info=exc)
    return _response(Problem(500, "internal error"), request)


NUL_REFUSED = frozenset({"22P05", "22021"})
"""SQLSTATEs of a string Postgres cannot store: the NUL character (`\\u0000`), which no text or jsonb
value may hold (untranslatable_character in jsonb, character_not_in_repertoire in text and parameters)."""


def database_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A value Postgres refuses because of what the caller sent is the caller's 422, found where every
    write meets the database instead of in each endpoint's types; the statement failed, so its
    transaction changed nothing. Any other database error is a bug."""
    if getattr(exc, "sqlstate", None) in NUL_REFUSED:
        return _response(Problem(422, "text must not contain the NUL character (\\u0000)"), request)
    if out_of_range(exc):
        return _response(Problem(422, "a number or date in the request is outside the range that can be stored"),
                         request)
    return internal_handler(request, exc)


def out_of_range(exc: BaseException) -> bool:
    """Whether asyncpg refused a query argument before sending it because it does not fit its column: an
    integer past the column's width (2**63 into a bigint) or a time that leaves the datetime range once
    put in UTC (`9999-12-31T23:59:59-05:00`, `0001-01-01T00:00:00+05:00`). Such values are the caller's,
    checked here once for every parameter of every query rather than in each endpoint's types."""
    return isinstance(exc, asyncpg.DataError) and isinstance(exc.__cause__, OverflowError)


UNDECODABLE_RECURSION = "while deserializing"
"""What msgspec's RecursionError says when a JSON document nests deeper than it can decode."""


def undecodable_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A body that is not UTF-8, or JSON nested past the decoder's recursion limit, is the caller's
    malformed request (400), wherever it is decoded: msgspec raises these two instead of its DecodeError,
    in Litestar's own body parsing as in the handlers that decode a body themselves, so they are mapped
    once here. A RecursionError that is not the decoder's is a bug."""
    if isinstance(exc, UnicodeDecodeError):
        return _response(Problem(400, "malformed request body: not valid UTF-8"), request)
    if isinstance(exc, RecursionError) and UNDECODABLE_RECURSION in str(exc):
        return _response(Problem(400, "malformed request body: JSON nested too deeply"), request)
    return internal_handler(request, exc)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    Problem: problem_handler,
    ValidationException: validation_handler,
    HTTPException: http_handler,
    asyncpg.PostgresError: database_handler,
    UnicodeDecodeError: undecodable_handler,
    RecursionError: undecodable_handler,
    Exception: internal_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "FieldError", "MediaType", "Problem", "encode"]
