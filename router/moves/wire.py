"""Signed calls from the move driver to a cell's internal move endpoints, with bodies passed through as bytes.

Unlike `Cell.call`, bodies may be raw bytes or a stream (rows and objects go
from one cell to the other without being decoded or kept), and failures do not
count against the cell's breaker: a move's bulk traffic must not decide how the
hot path sees a cell.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from common.problems import SEALED_CANNOT_MOVE, type_uri
from common.signing import Actor, sign, signed_stream
from router.cells import Cell

ROUTER = Actor(kind="router")
TIMEOUT = httpx.Timeout(120.0, connect=3.0)
FINAL = frozenset({type_uri(SEALED_CANNOT_MOVE)})
"""Problem types a cell answers a move with when no retry can help (a secret that does not open)."""


class StepError(Exception):
    """A step of a move failed in a way worth retrying (a cell unreachable, busy, or refusing for now)."""


class Fatal(StepError):
    """A step of a move can never succeed: the move is abandoned (before its flip) or fails."""


def path(project_id: Any, *parts: str) -> str:
    """`/internal/moves/{project_id}/…`."""
    return "/".join((f"/internal/moves/{project_id}", *parts))


def _signed(cell: Cell, method: str, url: str, *, json: Any = None, content: bytes | AsyncIterator[bytes] | None = None,
            params: dict[str, Any] | None = None) -> httpx.Request:
    if content is None or isinstance(content, bytes):
        request = cell.control.build_request(method, url, json=json, content=content, params=params, timeout=TIMEOUT)
        request.headers.update(sign(cell.secret, method, request.url.raw_path.decode(), ROUTER, body=request.content))
        return request
    # A streamed body: signed as streamed, the hop's trailer appended as it passes (common.signing).
    target = cell.control.build_request(method, url, params=params).url.raw_path.decode()
    headers = sign(cell.secret, method, target, ROUTER, body=None)
    return cell.control.build_request(method, url, content=signed_stream(cell.secret, headers, content),
                                      params=params, headers=headers, timeout=TIMEOUT)


async def call(cell: Cell, method: str, url: str, *, json: Any = None,
               content: bytes | AsyncIterator[bytes] | None = None, params: dict[str, Any] | None = None,
               ok: tuple[int, ...] = (200,), what: str = "") -> httpx.Response:
    """A signed request; a StepError unless the answer is one of `ok`."""
    try:
        response = await cell.control.send(_signed(cell, method, url, json=json, content=content, params=params))
    except httpx.TransportError as exc:
        raise StepError(f"{cell.region} unreachable ({type(exc).__name__}) {what}".strip()) from exc
    if response.status_code not in ok:
        raise refusal(cell, response, what)
    return response


def refusal(cell: Cell, response: httpx.Response, what: str) -> StepError:
    """The cell's refusal as an error naming the status and the cell's own detail (never a body of data);
    `Fatal` when its problem type says retrying cannot help."""
    detail = kind = ""
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        try:
            problem = msgspec.json.decode(response.content)
            detail, kind = str(problem.get("detail") or ""), str(problem.get("type") or "")
        except (msgspec.DecodeError, AttributeError):
            detail = kind = ""
    error = Fatal if kind in FINAL else StepError
    return error(f"{cell.region} answered {response.status_code} {what}: {detail}".strip().rstrip(":"))


async def copy_object(source: Cell, target: Cell, project_id: Any, key: str) -> int:
    """Stream one object from the source cell into the target cell; the bytes stored there."""
    request = _signed(source, "GET", path(project_id, "objects", "content"), params={"key": key})
    try:
        response = await source.control.send(request, stream=True)
    except httpx.TransportError as exc:
        raise StepError(f"{source.region} unreachable ({type(exc).__name__}) reading an object") from exc
    try:
        if response.status_code != 200:
            await response.aread()
            raise refusal(source, response, "reading an object")
        stored = await call(target, "PUT", path(project_id, "objects", "content"), params={"key": key},
                            content=response.aiter_raw(), what="storing an object")
    except httpx.TransportError as exc:
        raise StepError(f"object stream interrupted ({type(exc).__name__})") from exc
    finally:
        await response.aclose()
    size: int = msgspec.json.decode(stored.content)["size"]
    return size
