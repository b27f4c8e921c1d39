"""HTTP routes of the surveys area."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
