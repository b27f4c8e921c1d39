"""HTTP routes of the sessions area."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
