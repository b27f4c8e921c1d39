"""Conversation tokens: what lets one end user, and only them, read and write their chat.

The widget's ingest key is public, so it cannot protect a conversation; the token
can. It is an HMAC of the conversation id under the project's own secret, so the
cell stores nothing extra, checks it without a lookup, and a token opens exactly
one conversation of one project.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

HEADER = "x-relay-conversation-token"


def issue(secret: bytes, conversation_id: uuid.UUID) -> str:
    """HMAC-SHA256(secret, "conversation:" + id), url-safe base64."""
    mac = hmac.new(secret, f"conversation:{conversation_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()


def matches(secret: bytes, conversation_id: uuid.UUID, presented: str | None) -> bool:
    """Whether the presented token is this conversation's, compared in constant time (with or without
    the base64 padding)."""
    if not presented:
        return False
    expected = issue(secret, conversation_id).rstrip("=").encode()
    return hmac.compare_digest(presented.strip().rstrip("=").encode(), expected)
