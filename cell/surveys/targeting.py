"""Which surveys to show now: targeting evaluated on the server, as plain functions.

The SDK only asks; the cell decides, so a survey's rules (pages, delay, once per
person) hold for every client version and cannot be bypassed by a stale widget.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """`*` matches any run of characters (slashes included); everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def page_matches(patterns: list[str] | None, url: str | None) -> bool:
    """True when no pages are named, or one pattern matches the whole URL or its path."""
    if not patterns:
        return True
    if not url:
        return False
    try:
        path = urlsplit(url).path or "/"
    except ValueError:
        path = url
    return any(_glob(p).fullmatch(url) or _glob(p).fullmatch(path) for p in patterns)


def is_due(targeting: dict[str, Any], started_at: datetime, now: datetime) -> bool:
    """`showAfterSeconds` counted from the session's start."""
    after = targeting.get("showAfterSeconds") or 0
    return (now - started_at).total_seconds() >= after


def due_in(targeting: dict[str, Any], started_at: datetime, now: datetime) -> float:
    """Seconds until `showAfterSeconds` is reached (0 once it is): when a page that asked too early should
    ask again, rather than waiting for its next load (a single-page app may never have one)."""
    after = targeting.get("showAfterSeconds") or 0
    return max(0.0, after - (now - started_at).total_seconds())


def to_show(targeting: dict[str, Any], *, url: str | None, started_at: datetime, now: datetime,
            answered: bool) -> bool:
    """Whether an active survey with this targeting is shown now to this session."""
    if targeting.get("showOnce") and answered:
        return False
    return page_matches(targeting.get("showOnPages"), url) and is_due(targeting, started_at, now)
