"""Wire types of privacy rules: `{name, enabled, rule: {type, selector, pattern, scope}}`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from cell.privacy.scrub import SCOPES, PatternError, check_pattern

RuleType = Literal["pattern", "selector"]
Scope = Literal["content", "logs", "context", "messages"]
MAX_NAME, MAX_SELECTOR = 200, 500


class RuleSpec(msgspec.Struct, kw_only=True):
    """What a rule does. `pattern`: a built-in name or `regex:<expr>`; `selector`: a CSS selector for the SDK."""

    type: RuleType
    pattern: str | None = None
    selector: str | None = None
    scope: list[Scope] | None = None

    def check(self, at: str) -> None:
        """Validate and normalise; `at` is where this rule sits in the body (errors point below it).

        The containing struct calls this, so a failure carries one full path: errors raised inside
        a nested struct would carry one path per level.
        """
        if self.type == "pattern":
            if self.selector is not None:
                raise ValueError(f"a pattern rule has no selector - at `{at}.selector`")
            if not self.pattern:
                raise ValueError(f"a pattern rule needs a pattern - at `{at}.pattern`")
            try:
                check_pattern(self.pattern)
            except PatternError as exc:
                raise ValueError(f"{exc} - at `{at}.pattern`") from None
        else:
            if self.pattern is not None:
                raise ValueError(f"a selector rule has no pattern - at `{at}.pattern`")
            check_selector(self.selector, at)
        if self.scope is not None and not self.scope:
            raise ValueError("scope lists at least one of " + ", ".join(SCOPES) + f" - at `{at}.scope`")
        # Stored in full: every scope by default, each once, in a stable order.
        chosen = set(self.scope or SCOPES)
        self.scope = [s for s in SCOPES if s in chosen]  # type: ignore[misc]


def check_selector(selector: str | None, at: str) -> None:
    """A CSS selector the SDK can hand to `querySelectorAll`; no declaration blocks or markup."""
    if not selector or not selector.strip():
        raise ValueError(f"a selector rule needs a selector - at `{at}.selector`")
    if len(selector) > MAX_SELECTOR:
        raise ValueError(f"a selector is at most {MAX_SELECTOR} characters - at `{at}.selector`")
    if any(ch in selector for ch in "{}<;") or any(ord(ch) < 32 for ch in selector):
        raise ValueError(f"a selector cannot hold braces, <, ; or control characters - at `{at}.selector`")


def check_name(name: str) -> None:
    """Names appear in redaction markers (`[redacted:<name>]`): short, printable, no brackets."""
    if not 1 <= len(name.strip()) <= MAX_NAME or len(name) > MAX_NAME:
        raise ValueError(f"name is 1 to {MAX_NAME} characters - at `$.name`")
    if any(ch in name for ch in "[]") or any(ord(ch) < 32 for ch in name):
        raise ValueError("name cannot hold brackets or control characters - at `$.name`")


class RuleIn(msgspec.Struct, kw_only=True):
    """`POST …/privacy-rules`."""

    name: str
    rule: RuleSpec
    enabled: bool = True

    def __post_init__(self) -> None:
        check_name(self.name)
        self.rule.check("$.rule")


class RulePatch(msgspec.Struct, kw_only=True):
    """`PATCH …/privacy-rules/{id}`: absent fields are left alone; `rule` is replaced whole."""

    name: str | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    rule: RuleSpec | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if not isinstance(self.name, msgspec.UnsetType):
            check_name(self.name)
        if isinstance(self.rule, RuleSpec):
            self.rule.check("$.rule")


class RuleBody(msgspec.Struct, kw_only=True):
    """A stored rule's `rule` as the API returns it."""

    type: RuleType
    pattern: str | None = None
    selector: str | None = None
    scope: list[Scope] = msgspec.field(default_factory=lambda: list(SCOPES))  # type: ignore[arg-type]


class PrivacyRule(msgspec.Struct, kw_only=True):
    """A privacy rule as the API returns it."""

    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    enabled: bool
    rule: RuleBody
    created_at: datetime
    updated_at: datetime


class PrivacyConfig(msgspec.Struct):
    """What the SDK masks on the client: the CSS selectors of the enabled selector rules."""

    selectors: list[str]


class IngestConfig(msgspec.Struct):
    """`GET /v1/ingest/config`: everything the SDK needs at start, in one request."""

    privacy: PrivacyConfig
    flags: dict[str, bool]
