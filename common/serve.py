"""Serving an ASGI app in this process, shutting down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

from typing import Any

import uvicorn

from common import telemetry


def serve(app: Any, host: str, port: int, *, name: str, region: str | None = None) -> None:
    """Run `app` with uvicorn (uvloop, httptools) until a signal; in-flight requests finish first."""
    telemetry.setup(name, region)
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        access_log=False, server_header=False, date_header=False, log_level="warning", log_config=None,
        timeout_graceful_shutdown=10, backlog=2048, proxy_headers=False,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        telemetry.shutdown()
