"""Server-side redaction by a project's privacy rules, before anything is stored.

Pure functions over compiled rules: `compile_rules` turns stored rows into
`Rules`, `scrub_text` / `scrub_value` / `scrub_message` replace every match with
`[redacted:<rule name>]` and count it in a `Report` (rule id → matches, per
scope) that never holds the redacted value. `rules_for` loads a project's
enabled rules through a small per-process cache.

Every built-in pattern is written to run in time linear in its input (runs are
anchored by look-behinds, quantifiers are possessive or unambiguous), because
the input is whatever an end user's browser sent. Custom `regex:` patterns are
a tenant's own: they run on RE2 (the `google-re2` wheel), whose matching is
linear in the text whatever the pattern, so no rule can stall a cell; what RE2
cannot run (backreferences, look-around) is refused when the rule is created.

Each request's scrubbing has a budget (`Budget`, carried by its `Report`): the
characters custom patterns may scan and the seconds it may take. Past it the
request is refused (413 / 503) rather than stored unredacted. Large bodies are
scrubbed off the event loop, on a small thread pool (`Scrubber`, sized by
`RELAY_SCRUB_THREADS`), so one tenant's big body never holds up another's
requests; RE2 releases the GIL while it matches.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import ipaddress
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import asyncpg
import msgspec
import re2

from common.problems import Problem

SCOPES = ("content", "logs", "context", "messages")
BUILTINS = ("email", "card", "bearer", "credentials", "ip")
REGEX_PREFIX = "regex:"
MAX_REGEX = 500
MARKER = "[redacted:{}]"
DEFAULT_RULES = ("credentials", "card", "bearer")
"""The pattern rules every new project starts with (enabled, every scope)."""

Span = tuple[int, int]
Finder = Callable[[str], Iterator[Span]]
T = TypeVar("T")


class _Pattern(Protocol):
    """What a finder needs of a compiled regex: the stdlib's `re` and RE2 both provide it."""

    @property
    def groupindex(self) -> Mapping[str, int]: ...
    def finditer(self, text: str) -> Iterator[Any]: ...
    def search(self, text: str) -> Any: ...


# -- Built-in patterns ---------------------------------------------------------------------------------------

def _regex_finder(regex: _Pattern, valid: Callable[[str], bool] | None = None) -> Finder:
    """Spans of a regex's matches: its `secret` group when that took part, else the whole match."""
    secret = regex.groupindex.get("secret")  # by number: RE2's matches take no group names

    def find(text: str) -> Iterator[Span]:
        for m in regex.finditer(text):
            span = m.span(secret) if secret is not None and m.start(secret) >= 0 else m.span()
            if span[0] < span[1] and (valid is None or valid(text[span[0]:span[1]])):
                yield span

    return find


_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@(?:[A-Za-z0-9-]++\.)+[A-Za-z]{2,}+")

_CARD_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9])*+")
_DIGITS = re.compile(r"[0-9]++")
_CARD_GROUPS = 6
"""Cards are written in at most five groups (4-4-4-4-3); one more for slack."""


def luhn(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn(digits)


def _cards(text: str) -> Iterator[Span]:
    """Runs of 13–19 digits (single spaces or dashes allowed between) that pass Luhn.

    A longer run of separated groups (a card after an order number, say) is searched
    for a card-length window of whole groups.
    """
    for m in _CARD_RUN.finditer(text):
        run = m.group()
        if len(run) < 13:
            continue
        if _is_card(run.replace(" ", "").replace("-", "")):
            yield m.span()
            continue
        groups = [(g.start(), g.end(), g.group()) for g in _DIGITS.finditer(run)]
        k = 0
        while k < len(groups):
            step, digits = 1, ""
            for j in range(k, min(k + _CARD_GROUPS, len(groups))):
                digits += groups[j][2]
                if len(digits) > 19:
                    break
                if _is_card(digits):
                    yield m.start() + groups[k][0], m.start() + groups[j][1]
                    step = j - k + 1
                    break
            k += step


_BEARER = (
    re.compile(r"(?<![A-Za-z0-9])(?i:bearer)\s++(?P<secret>(?!\[redacted:)[A-Za-z0-9\-._~+/]{8,}+=*+)"),
    # Relay keys and session tokens, Stripe-, GitHub-, GitLab- and Slack-style secrets.
    re.compile(r"(?<![A-Za-z0-9_-])(?:rk|rs|sk|rk_live|sk_live|sk_test|whsec|gh[pousr]|glpat|xox[abprs])[_-]"
               r"(?=[A-Za-z_-]*+[0-9])[A-Za-z0-9_-]{12,}+"),
    # JSON Web Tokens: base64url header and payload, both JSON objects (`eyJ` is `{"`).
    re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}+\.eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]*+"),
)

_KEYWORD = (r"(?:pass(?:word|wd|phrase)|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
            r"|authorization|credentials?|cvc|cvv)")
_NOT_MARKED = r"(?!\[redacted:)"
_CREDENTIALS = (
    # key=value in query strings and forms, "key": "value" in JSON-ish text, `Key: value` in headers.
    re.compile(
        r"(?<![A-Za-z0-9_.-])(?i:[A-Za-z0-9_.-]*?" + _KEYWORD + r"(?:[_.-][A-Za-z0-9]{1,20}){0,3}+s?)"
        r"\\?[\"']?[ \t]*+[:=][ \t]*+"
        r"(?:\\\"(?P<s1>" + _NOT_MARKED + r"(?:[^\"\\\n]|\\[^\"\n])*+)\\\""
        r"|\"(?P<s2>" + _NOT_MARKED + r"[^\"\\\n]*+(?:\\.[^\"\\\n]*+)*+)\""
        r"|'(?P<s3>" + _NOT_MARKED + r"[^'\\\n]*+(?:\\.[^'\\\n]*+)*+)'"
        r"|(?P<s4>(?!(?i:(?:basic|bearer|digest|token)[ \t]++)?\[redacted:)"
        r"(?:(?i:basic|bearer|digest|token)[ \t]++)?[^\s&\"',;}<>]++))"
    ),
    # Cookie headers in text: everything to the end of the line.
    re.compile(r"(?<![A-Za-z0-9_-])(?i:set-cookie|cookie)[ \t]*+:[ \t]*+(?P<secret>" + _NOT_MARKED
               + r"[^\r\n\"]++)"),
    # user:password@ in URLs.
    re.compile(r"(?<=://)[^/\s:@]++:(?P<secret>" + _NOT_MARKED + r"[^/\s@]++)@"),
)

_SENSITIVE_KEY = re.compile(
    r"(?:^|_)(?:password|passwd|passphrase|pwd|secret|credentials?)(?:_|$)"
    r"|(?:^|_)(?:token|api_?key|access_?key|private_?key|auth|authorization|cookie|signature|cvc|cvv)$"
)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


def sensitive_key(key: str) -> bool:
    """Whether a JSON key or header name names a credential (`password`, `accessToken`, `X-Api-Key` …)."""
    return _sensitive_key(key) if len(key) <= 64 else _sensitive_key.__wrapped__(key)


@functools.lru_cache(maxsize=4096)  # the same few keys come back in every payload; long ones are not kept
def _sensitive_key(key: str) -> bool:
    normal = _CAMEL.sub(r"\1_\2", key).lower().replace("-", "_").replace(".", "_").replace(" ", "_")
    return _SENSITIVE_KEY.search(normal) is not None


def _credential_spans(text: str) -> Iterator[Span]:
    for m in _CREDENTIALS[0].finditer(text):
        for g in ("s1", "s2", "s3", "s4"):
            if m.start(g) >= 0:
                if m.start(g) < m.end(g):
                    yield m.span(g)
                break


_IPV4 = re.compile(r"(?<![0-9.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                   r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?!\.?[0-9])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")


def _is_ipv6(candidate: str) -> bool:
    if sum(1 for part in candidate.split(":") if part) < 2:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


Gate = Callable[[str, str], bool]
"""A cheap necessary condition for a rule to match: (text, text.lower()) → might match."""

_CARD_GATE = re.compile(r"[0-9][0-9 -]{12}")
_TOKEN_GATE = re.compile(r"(?:rk|rs|sk|whsec|gh[pousr]|glpat|xox[abprs])[_-]")
_IP_GATE = re.compile(r"[0-9]\.[0-9]|::|[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}+:")
_CREDENTIAL_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "cvc", "cvv", "cookie",
                     "signature")


def _credentials_gate(text: str, lowered: str) -> bool:
    return any(w in lowered for w in _CREDENTIAL_WORDS) or ("://" in text and "@" in text)


def _bearer_gate(text: str, lowered: str) -> bool:
    return "bearer" in lowered or "eyJ" in text or (("_" in text or "-" in text)
                                                    and _TOKEN_GATE.search(text) is not None)


@dataclass(frozen=True, slots=True)
class _Builtin:
    finders: tuple[Finder, ...]
    gate: Gate
    """Texts it turns away are skipped without running the finders."""
    keys: bool = False
    """Also redact whole values under credential-like keys when walking JSON."""


_BUILTINS: dict[str, _Builtin] = {
    "email": _Builtin((_regex_finder(_EMAIL),), lambda text, _: "@" in text),
    "card": _Builtin((_cards,), lambda text, _: _CARD_GATE.search(text) is not None),
    "bearer": _Builtin(tuple(_regex_finder(r) for r in _BEARER), _bearer_gate),
    "credentials": _Builtin((_credential_spans, *(_regex_finder(r) for r in _CREDENTIALS[1:])),
                            _credentials_gate, keys=True),
    "ip": _Builtin((_regex_finder(_IPV4), _regex_finder(_IPV6, _is_ipv6)),
                   lambda text, _: _IP_GATE.search(text) is not None),
}


# -- Custom regexes ------------------------------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the customer's mistake, answered 422, not a log line


class PatternError(ValueError):
    """A rule's pattern is unknown, malformed or cannot run on RE2."""


def check_pattern(pattern: str) -> _Pattern | None:
    """Validate a rule's `pattern`: a built-in name (None) or `regex:<expr>` (its compiled RE2 form).

    Custom expressions run over every string an end user sends, so they run on RE2, in time linear in
    the text; what RE2 cannot run (backreferences, look-ahead and look-behind, possessive quantifiers)
    is refused here, when the rule is created.
    """
    if pattern in _BUILTINS:
        return None
    if not pattern.startswith(REGEX_PREFIX):
        raise PatternError(f"pattern is one of {', '.join(BUILTINS)} or regex:<expression>")
    expr = pattern[len(REGEX_PREFIX):]
    if not 1 <= len(expr) <= MAX_REGEX:
        raise PatternError(f"a custom regex is 1 to {MAX_REGEX} characters")
    try:
        compiled: _Pattern = re2.compile(expr, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        if "\\" in expr and "invalid escape sequence: \\" in reason and reason[-1:].isdigit():
            reason = "backreferences are not supported"
        elif "(?=" in reason or "(?!" in reason or "(?<" in reason:
            reason = "look-ahead and look-behind are not supported"
        raise PatternError(f"the regex cannot run on RE2 (linear-time matching): {reason.replace('`', chr(39))}"
                           ) from None
    if compiled.search("") is not None:
        raise PatternError("the regex matches the empty string")
    return compiled


# -- Compiled rules ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rule:
    """One enabled pattern rule, ready to run."""

    id: str
    name: str
    scope: frozenset[str]
    finders: tuple[Finder, ...]
    gate: Gate | None = None
    keys: bool = False
    custom: bool = False
    """A tenant's own regex: what it scans is charged to the request's budget."""

    @property
    def marker(self) -> str:
        return MARKER.format(self.name)


@dataclass(frozen=True)
class Rules:
    """A project's enabled rules: pattern rules by scope, in the order they were created, and selectors."""

    patterns: tuple[Rule, ...] = ()
    selectors: tuple[str, ...] = ()
    by_scope: dict[str, tuple[Rule, ...]] = field(default_factory=dict)

    def in_scope(self, scope: str) -> tuple[Rule, ...]:
        """The pattern rules that apply to `scope`."""
        return self.by_scope.get(scope, ())


def compile_rules(rows: Iterable[Mapping[str, Any]]) -> Rules:
    """Rules from stored rows (`id, name, enabled, rule`), disabled ones left out, order kept.

    A stored pattern that no longer compiles raises: failing closed beats storing unredacted data.
    """
    patterns: list[Rule] = []
    selectors: list[str] = []
    for row in rows:
        if not row["enabled"]:
            continue
        spec = row["rule"]
        if spec.get("type") == "selector":
            if spec.get("selector"):
                selectors.append(str(spec["selector"]))
            continue
        pattern = str(spec.get("pattern") or "")
        scope = frozenset(spec.get("scope") or SCOPES)
        builtin = _BUILTINS.get(pattern)
        if builtin is not None:
            patterns.append(Rule(str(row["id"]), str(row["name"]), scope, builtin.finders,
                                 builtin.gate, builtin.keys))
        else:
            compiled = check_pattern(pattern)
            assert compiled is not None
            patterns.append(Rule(str(row["id"]), str(row["name"]), scope, (_regex_finder(compiled),), custom=True))
    by_scope = {s: tuple(r for r in patterns if s in r.scope) for s in SCOPES}
    return Rules(tuple(patterns), tuple(selectors), by_scope)


# -- Redaction -----------------------------------------------------------------------------------------------

MAX_SECONDS = 2.0
"""Default time budget of one request's scrubbing."""
MAX_CUSTOM_CHARS = 8 * 1024 * 1024
"""Default budget of characters custom regexes may scan for one request (each rule scans the text once)."""


class Budget:
    """What one request's scrubbing may cost: a deadline, and characters scanned by custom regexes."""

    def __init__(self, seconds: float = MAX_SECONDS, custom_chars: int = MAX_CUSTOM_CHARS) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.chars_left = custom_chars

    def charge(self, rule: Rule, text: str) -> None:
        """Count a rule's scan of `text`; a 413 problem once custom regexes have scanned too much."""
        if rule.custom:
            self.chars_left -= len(text)
            if self.chars_left < 0:
                raise Problem(413, "this body is too large to scrub with the project's custom privacy rules")

    def check(self) -> None:
        """A 503 problem once the request's scrubbing ran past its deadline."""
        if time.monotonic() > self.deadline:
            raise Problem(503, f"scrubbing this body took longer than {self.seconds:g} s; retry later",
                          retry_after=5)


class Report:
    """What was redacted: per rule id, its name and match counts per scope. Never the values.

    It also carries the request's `Budget` (a default one unless given).
    """

    def __init__(self, budget: Budget | None = None) -> None:
        self.rules: dict[str, dict[str, Any]] = {}
        self.budget = budget if budget is not None else Budget()

    def add(self, rule: Rule, scope: str, n: int) -> None:
        """Count `n` matches of `rule` in `scope`."""
        entry = self.rules.setdefault(rule.id, {"rule": rule.name, "matches": 0, "scopes": {}})
        entry["matches"] += n
        entry["scopes"][scope] = entry["scopes"].get(scope, 0) + n

    @property
    def counts(self) -> dict[str, int]:
        """Rule id → number of matches redacted."""
        return {rule_id: int(e["matches"]) for rule_id, e in self.rules.items()}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return bool(self.rules)

    def as_json(self) -> dict[str, Any]:
        """The form stored in `interactions.privacy_scope` (and messages' meta)."""
        redactions = {rule_id: {**e, "scopes": dict(e["scopes"])} for rule_id, e in self.rules.items()}
        return {"redactions": redactions, "total": self.total}


_MARKED = re.compile(r"\[redacted:[^\]\n]{0,200}\]")


def _redact(rule: Rule, text: str, lowered: str, budget: Budget | None = None) -> tuple[str, int]:
    if rule.gate is not None and not rule.gate(text, lowered):
        return text, 0
    if budget is not None:
        budget.charge(rule, text)
    n = 0
    for find in rule.finders:
        marked = [m.span() for m in _MARKED.finditer(text)] if "[redacted:" in text else []
        marked_starts = [s for s, _ in marked]
        out: list[str] = []
        last = 0
        for start, end in find(text):
            if start < last or _overlaps(marked, marked_starts, start, end):
                continue  # inside what an earlier rule already redacted
            out.append(text[last:start])
            out.append(rule.marker)
            last = end
            n += 1
        if out:
            out.append(text[last:])
            text = "".join(out)
    return text, n


def _overlaps(marked: list[Span], starts: list[int], start: int, end: int) -> bool:
    """Whether [start, end) overlaps one of the sorted, disjoint spans in `marked`."""
    if not marked:
        return False
    i = bisect.bisect_right(starts, start) - 1
    if i >= 0 and marked[i][1] > start:
        return True
    return i + 1 < len(marked) and marked[i + 1][0] < end


def scrub_text(rules: Rules, text: str, scope: str, report: Report | None = None) -> str:
    """`text` with every match of the rules that apply to `scope` replaced by `[redacted:<rule name>]`."""
    lowered = text.lower()
    budget = report.budget if report is not None else None
    for rule in rules.in_scope(scope):
        text, n = _redact(rule, text, lowered, budget)
        if budget is not None:
            budget.check()
        if n:
            lowered = text.lower()
        if n and report is not None:
            report.add(rule, scope, n)
    return text


def scrub_message(rules: Rules, body: str, report: Report | None = None) -> str:
    """A chat message body, scrubbed by the rules whose scope includes `messages`."""
    return scrub_text(rules, body, "messages", report)


def scrub_value(rules: Rules, value: Any, scope: str, report: Report | None = None) -> Any:
    """A JSON value with every string in it (keys too) scrubbed; a new value, the input is left alone.

    Values under credential-like keys (`password`, `Authorization`, `accessToken` …, and HAR-style
    `{"name": "Cookie", "value": …}` headers) are redacted whole by a rule with key matching.
    """
    active = rules.in_scope(scope)
    if isinstance(value, dict | list) and active:
        # One cheap look at the whole value first: only the rules that might match anywhere walk it.
        blob = msgspec.json.encode(value).decode()
        lowered = blob.lower()
        active = tuple(r for r in active if r.gate is None or r.gate(blob, lowered))
        rules = Rules(active, by_scope={scope: active})
    if not active:
        return value
    keyed = next((r for r in active if r.keys), None)
    return _walk(rules, value, scope, report, keyed)


def _walk(rules: Rules, value: Any, scope: str, report: Report | None, keyed: Rule | None) -> Any:
    """The scrubbed copy of `value`, built with an explicit stack: nesting costs no recursion."""
    root: list[Any] = [None]
    # (node, container of its copy, slot there, the keyed rule when under a credential-like key)
    stack: list[tuple[Any, Any, Any, Rule | None]] = [(value, root, 0, None)]
    while stack:
        node, parent, slot, under = stack.pop()
        if isinstance(node, str):
            parent[slot] = _whole(under, node, scope, report) if under else scrub_text(rules, node, scope, report)
        elif isinstance(node, list):
            copy: list[Any] = [None] * len(node)
            parent[slot] = copy
            if (keyed is not None and under is None and len(node) == 2 and isinstance(node[0], str)
                    and sensitive_key(node[0])):  # a [name, value] header pair
                copy[0] = node[0]
                stack.append((node[1], copy, 1, keyed))
            else:
                stack.extend((v, copy, i, under) for i, v in enumerate(node))
        elif isinstance(node, dict):
            out: dict[Any, Any] = {}
            parent[slot] = out
            har = (keyed is not None and under is None and isinstance(node.get("name"), str)
                   and "value" in node and sensitive_key(node["name"]))
            for k, v in node.items():
                inner = under
                if keyed is not None and inner is None and isinstance(k, str) and (
                        sensitive_key(k) or (har and k == "value")):
                    inner = keyed
                key = scrub_text(rules, k, scope, report) if isinstance(k, str) and under is None else k
                out[key] = None  # keeps the key order; filled when popped
                stack.append((v, out, key, inner))
        elif under is not None and isinstance(node, int | float) and not isinstance(node, bool):
            parent[slot] = _whole(under, node, scope, report)
        else:
            parent[slot] = node
    return root[0]


def _whole(rule: Rule, value: Any, scope: str, report: Report | None) -> Any:
    if value == "" or (isinstance(value, str) and _MARKED.fullmatch(value)):
        return value
    if report is not None:
        report.add(rule, scope, 1)
    return rule.marker


# -- Loading, with a small per-process cache -------------------------------------------------------------------

STALE_SECONDS = 2.0
_MAX_CACHED = 4096


@dataclass(slots=True)
class _Cached:
    rules: Rules
    loaded_at: float


class _Cache:
    """Project → compiled rules, reloaded after `STALE_SECONDS` or at once after a change made here."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, uuid.UUID], _Cached] = {}
        self.generation: dict[uuid.UUID, int] = {}

    def drop(self, project_id: uuid.UUID) -> None:
        self.generation[project_id] = self.generation.get(project_id, 0) + 1
        for key in [k for k in self.entries if k[1] == project_id]:
            del self.entries[key]

    def prune(self, now: float) -> None:
        if len(self.entries) > _MAX_CACHED:
            for key in [k for k, e in self.entries.items() if now - e.loaded_at >= STALE_SECONDS]:
                del self.entries[key]


_cache = _Cache()


async def rules_for(pool: asyncpg.Pool, project_id: uuid.UUID) -> Rules:
    """The project's enabled rules, compiled; at most `STALE_SECONDS` old unless changed in this process."""
    key = (id(pool), project_id)
    now = time.monotonic()
    hit = _cache.entries.get(key)
    if hit is not None and now - hit.loaded_at < STALE_SECONDS:
        return hit.rules
    generation = _cache.generation.get(project_id, 0)
    rows = await pool.fetch(
        """SELECT id, name, enabled, rule FROM privacy_rules
            WHERE project_id = $1 AND enabled ORDER BY created_at, id""", project_id)
    rules = compile_rules(rows)
    if _cache.generation.get(project_id, 0) == generation:  # no change committed here while we read
        _cache.prune(now)
        _cache.entries[key] = _Cached(rules, now)
    return rules


def invalidate(project_id: uuid.UUID) -> None:
    """Forget a project's cached rules; called after a rule change commits in this process."""
    _cache.drop(project_id)


# -- Where scrubbing runs --------------------------------------------------------------------------------------

OFFLOAD_BYTES = 32 * 1024
"""Bodies from this size on are scrubbed on the pool rather than on the event loop."""


class Scrubber:
    """A cell process's scrubbing: per-request budgets, and a thread pool for large bodies.

    Opened and closed by the cell's lifespan (`CellContext.scrubber`).
    """

    def __init__(self, threads: int, seconds: float = MAX_SECONDS, custom_chars: int = MAX_CUSTOM_CHARS) -> None:
        self.seconds = seconds
        self.custom_chars = custom_chars
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="relay-scrub")

    def report(self) -> Report:
        """A fresh report for one request, carrying this cell's budget (its clock starts now)."""
        return Report(Budget(self.seconds, self.custom_chars))

    async def run(self, size: int, work: Callable[[], T]) -> T:
        """`work()` (scrubbing of a body of about `size` bytes): inline when small, else on the pool."""
        if size < OFFLOAD_BYTES:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def close(self) -> None:
        """Stop the pool (work still queued is dropped; running work finishes)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
