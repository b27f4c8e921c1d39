"""Serving an ASGI app in this process, shutting down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

from typing import Any

import uvicorn

from common import telemetry

KEEP_ALIVE_SECONDS = 75
"""How long an idle connection stays open. Longer than any client of ours keeps one idle (the router's
pool to a cell: `router.cells.POOL_IDLE_SECONDS`), so a client never reuses one the server is closing —
which fails at once, looking like a dead cell. uvicorn's default, 5 s, is shorter than most pools'."""


def serve(app: Any, host: str, port: int, *, name: str, region: str | None = None,
          tls: tuple[str, str] | None = None) -> None:
    """Run `app` with uvicorn (uvloop, httptools) until a signal; in-flight requests finish first.

    `tls` is (certificate chain, private key) as PEM files: the server then speaks only HTTPS.
    """
    telemetry.setup(name, region)
    cert, key = tls or (None, None)
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        access_log=False, server_header=False, date_header=False, log_level="warning", log_config=None,
        timeout_graceful_shutdown=10, backlog=2048, proxy_headers=False, timeout_keep_alive=KEEP_ALIVE_SECONDS,
        ssl_certfile=cert, ssl_keyfile=key,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        telemetry.shutdown()
