"""HTTP routes of the roadmap area."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
