"""HTTP routes of the chat area."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
