"""HTTP routes of the feedback area."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
