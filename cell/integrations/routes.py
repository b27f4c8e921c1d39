"""HTTP routes of the integrations area."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
