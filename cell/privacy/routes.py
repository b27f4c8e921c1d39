"""HTTP routes of the privacy area."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
