"""The mail a running stack sent: the `.eml` files `relay dev` writes under `DIR/mail/`, and invitations.

Each stack's router URL is registered with its mail directory when it starts,
so a helper holding only an HTTP client to the router finds the mail it sent.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

_DIRECTORIES: dict[str, Path] = {}
_TOKEN = re.compile(r"/invitations/(rinv_[A-Za-z0-9_-]+)")


def register(router_url: str, directory: Path) -> None:
    """Remember where the stack behind this router writes its mail."""
    _DIRECTORIES[router_url.rstrip("/")] = directory


def directory_of(router: httpx.Client) -> Path:
    """The mail directory of the stack this client talks to."""
    return _DIRECTORIES[str(router.base_url).rstrip("/")]


def messages(directory: Path, to: str | None = None) -> list[EmailMessage]:
    """Every message written so far (oldest first), or only those to one address."""
    found = []
    for path in sorted(directory.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if to is None or str(message["To"]).lower() == to.lower():
            found.append(message)
    return found


def wait_for(directory: Path, to: str, count: int = 1, timeout: float = 30.0) -> list[EmailMessage]:
    """At least `count` messages to `to`, waiting for them to be written."""
    deadline = time.monotonic() + timeout
    while True:
        found = messages(directory, to)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} message(s) to {to} not written within {timeout}s (found {len(found)})")
        time.sleep(0.1)


def invitation_token(message: EmailMessage) -> str:
    """The one-time token an invitation email's link holds."""
    match = _TOKEN.search(message.get_content())
    assert match, message.get_content()
    return match.group(1)


def accept_invitation(router: httpx.Client, invitee: Any, count: int = 1) -> dict[str, Any]:
    """Accept the newest invitation sent to `invitee` (an `Admin`), signed in as them; the membership."""
    directory = directory_of(router)
    token = invitation_token(wait_for(directory, invitee.email, count)[-1])
    r = router.post(f"/v1/invitations/{token}/accept", headers=invitee.h)
    assert r.status_code == 200, r.text
    return dict(r.json())
