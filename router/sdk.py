"""The browser SDK's files at `/sdk/v1/…`: what customers' pages load from the global endpoint.

The files are the build output of `sdk/js` (`make install` or the container image runs esbuild): the classic
script `relay.js` (defines `window.Relay`), the ES module `relay.mjs`, the chunks they load on demand
(`replay.mjs`, `screenshot.mjs`, `extras.mjs`), the replay player for the dashboard (`player.js`, see
sdk/js/README.md) and the demo shop page (`/sdk/v1/demo`). They are public: any origin may load them, and
browsers and CDNs may keep them a day (then revalidate by ETag). Each file is read once and kept in memory
until it changes on disk. A raw ASGI handler, like `router.proxy`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from common.problems import Problem
from router.proxy import Receive, Scope, Send, request_id, send_problem

PREFIX = "/sdk/v1/"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "sdk" / "js" / "dist"
_NAME = re.compile(r"^[a-z][a-z0-9-]*\.(?:js|mjs|map|html)$")
_TYPES = {"js": b"text/javascript; charset=utf-8", "mjs": b"text/javascript; charset=utf-8",
          "map": b"application/json", "html": b"text/html; charset=utf-8"}
CACHE = b"public, max-age=86400, stale-while-revalidate=604800"
ALIASES = {"demo": "demo.html"}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    etag: bytes
    mtime: float


class SdkFiles:
    """Serves the built SDK from a directory (default: sdk/js/dist of this checkout)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = Path(directory) if directory else DEFAULT_DIR
        self._files: dict[str, _File] = {}

    def _load(self, name: str) -> _File | None:
        path = self.directory / name
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        cached = self._files.get(name)
        if cached is not None and cached.mtime == mtime:
            return cached
        body = path.read_bytes()
        loaded = _File(body, b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"', mtime)
        self._files[name] = loaded
        return loaded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET or HEAD one file; 404 for anything else under /sdk/, 405 for other methods."""
        rid = request_id(scope)
        path: str = scope["path"]
        name = ALIASES.get(path[len(PREFIX):], path[len(PREFIX):]) if path.startswith(PREFIX) else ""
        found = self._load(name) if _NAME.match(name) else None
        if found is None:
            detail = "no such SDK file" if self.directory.is_dir() else "the SDK is not built: run `make install`"
            await send_problem(send, Problem(404, detail), path, rid)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_problem(send, Problem(405, "the SDK files are read with GET", headers={"Allow": "GET, HEAD"}),
                               path, rid)
            return
        headers = [(b"content-type", _TYPES[name.rsplit(".", 1)[1]]), (b"access-control-allow-origin", b"*"),
                   (b"cache-control", CACHE), (b"etag", found.etag), (b"x-content-type-options", b"nosniff"),
                   (b"x-request-id", rid)]
        if any(k == b"if-none-match" and found.etag in v for k, v in scope["headers"]):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b"" if scope["method"] == "HEAD" else found.body
        headers.append((b"content-length", str(len(found.body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
