"""HTTP routes of the users area."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
