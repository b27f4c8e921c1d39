"""A small threaded HTTP server that records every request, for fakes of the outside world.

A fake subclasses `FakeServer` and answers in `route`. Tests read `requests`
to assert the wire shape Relay sent, and queue faults with `fail_next` to make
the next matching call answer with an error, or be carried out and then have
its connection dropped before any answer (the "provider did it, the caller
never heard" case).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DROP = "drop"


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Answer:
    """What the fake sends back."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """Applied to the next request that `route` calls faultable: answer `status`, or DROP after doing it."""

    kind: str
    status: int = 503
    body: Any = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        recorded = Recorded(self.command, parts.path, parse_qs(parts.query),
                            {k.lower(): v for k, v in self.headers.items()}, body)
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(recorded)
            answer, drop = fake.dispatch(recorded)
        if drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = b"" if answer.body is None else (
            answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode())
        self.send_response(answer.status)
        headers = {"Content-Type": "application/json; charset=utf-8", **answer.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer


class FakeServer:
    """A provider's API on 127.0.0.1 (an ephemeral port) in a background thread."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[Recorded] = []
        self.faults: deque[Fault] = deque()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, kind: str = DROP, status: int = 503, body: Any = None, *, times: int = 1) -> None:
        """Make the next `times` faultable calls fail: DROP (done, then no answer) or an error `status`."""
        with self.lock:
            self.faults.extend(Fault(kind, status, body) for _ in range(times))

    def calls(self, method: str, path: str) -> list[Recorded]:
        """The recorded requests to exactly this method and path."""
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def dispatch(self, request: Recorded) -> tuple[Answer, bool]:
        """Route the request; a queued fault applies to the first faultable one. (Answer, drop the connection)."""
        if self.faultable(request) and self.faults:
            fault = self.faults.popleft()
            if fault.kind != DROP:
                return Answer(fault.status, fault.body), False
            return self.route(request), True
        return self.route(request), False

    def faultable(self, request: Recorded) -> bool:
        """Whether queued faults apply to this request (by default: every POST)."""
        return request.method == "POST"

    def route(self, request: Recorded) -> Answer:
        raise NotImplementedError
