"""Headless Chromium for the SDK's end-to-end tests, and host pages on an origin other than the router's.

The browser is Debian's `/usr/bin/chromium` driven by the Python `playwright` package; nothing is ever
downloaded (`playwright install` is never run). Without it the tests skip with one line saying what to
install, except under CI=true, where a missing browser fails the run.
"""

from __future__ import annotations

import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Where the browser tests save screenshots of the widget, to look at (RELAY_SDK_SHOTS, else a new temp folder).
SHOTS = Path(os.environ.get("RELAY_SDK_SHOTS") or tempfile.mkdtemp(prefix="relay-sdk-shots-"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-dev-shm-usage"]


def need_chromium() -> None:
    """Skip (or fail under CI) when the browser is missing."""
    if CHROMIUM.exists():
        return
    message = "tests/sdk need Chromium: apt-get install chromium (make test does it when run as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class HostSite:
    """A customer's site: pages served from `http://localhost:<port>`, another origin than the router."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                body = site.pages.get(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self.do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def shop_page(router: str, key: str, *, options: str = "", body: str = "") -> str:
    """A host page that loads the SDK from the router as a customer would."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>The shop</h1><p>Welcome back. <span class="account-email">jane@example.com</span></p>
<label for="card">Card</label><input id="card" value="4242 4242 4242 4242">
{body}
<script src="{router}/sdk/v1/relay.js"></script>
<script>Relay.init({{key: "{key}"{options}}}).then(() => {{ window.relayReady = true; }});</script>
</body></html>"""
