"""Serving an ASGI app in this process, shutting down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn


def serve(app: Any, host: str, port: int, *, name: str) -> None:
    """Run `app` with uvicorn (uvloop, httptools) until a signal; in-flight requests finish first."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        access_log=False, server_header=False, date_header=False, log_level="warning",
        timeout_graceful_shutdown=10, backlog=2048,
    )
    uvicorn.Server(config).run()
