"""HTTP routes of the media area."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
