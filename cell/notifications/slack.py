"""Slack incoming webhooks: one JSON POST `{text, blocks}` to the URL in the project's `slack` integration.

The URL is itself the credential, so it never appears in an error or a log
line. It is vetted by the SSRF guard when the message is sent and the request
goes to the vetted address (`cell.webhooks.delivery.guarded_post`), like a
webhook delivery.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from cell import netguard
from cell.integrations import SlackConfig
from cell.settings import CellSettings
from cell.webhooks.delivery import guarded_post

MAX_TEXT = 3000
"""Slack's limit for a section block's text."""


class SendError(Exception):
    """Slack did not take the message; says how, never where."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def escape(text: str) -> str:
    """User text made inert in Slack's mrkdwn: `&`, `<` and `>` escaped, so it cannot forge links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def link(url: str, label: str) -> str:
    """A mrkdwn link; the URL must not carry `|` or `>`, which would end it early."""
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{escape(label)}>"


async def post(http: httpx.AsyncClient, settings: CellSettings, config: SlackConfig, text: str,
               blocks: list[dict[str, Any]] | None = None) -> None:
    """Post one message; SendError when Slack (or whatever listens there) did not accept it."""
    if not config.webhook_url:
        raise SendError("no webhook URL configured", permanent=True)
    message: dict[str, Any] = {"text": text[:MAX_TEXT]}
    if blocks:
        message["blocks"] = blocks
    if config.channel:
        message["channel"] = config.channel
    try:
        status = await guarded_post(http, settings, config.webhook_url, msgspec.json.encode(message),
                                    {"content-type": "application/json", "user-agent": "Relay-Notifications/1.0"})
    except netguard.Refused as exc:
        raise SendError(f"destination refused: {exc}", permanent=True) from None
    except httpx.TimeoutException:
        raise SendError("timed out") from None
    except httpx.HTTPError as exc:
        raise SendError(f"connection failed ({type(exc).__name__})") from None
    if not 200 <= status < 300:
        # Slack answers 4xx for a revoked or malformed hook (retrying cannot help), 5xx/429 when it is struggling.
        raise SendError(f"HTTP {status}", permanent=400 <= status < 500 and status != 429)
