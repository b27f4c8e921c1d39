"""Labels from a report's words, logs and errors: keyword and pattern rules, each with its reason.

A label is only worth showing if a person can see why it is there, so every rule names what fired it
("word 'checkout'", "logs: POST /api/export 504"). The rules read normalised tokens (so "crashed",
"crashes" and "crashing" are one word) and the logs (failed requests, exception types), never a guess.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from cell.enrichment.text import TOPICS, Document, cues, sentences, stem, tokens

METHOD = "local-rules-v1"
"""`ai_method.labels` of these labels."""
MAX_LABELS = 6

LABELS = ("crash", "performance", "ui", "payments", "auth", "network-error", "data-loss", "notifications",
          "search", "files", "localization", "accessibility", "mobile", "integrations", "feature-request",
          "question", "praise")
"""Every label the local provider can give, in the order they are listed on an interaction."""


def _stems(words: str | tuple[str, ...]) -> frozenset[str]:
    return frozenset(tokens(words if isinstance(words, str) else " ".join(words)))


_WORDS: dict[str, frozenset[str]] = {
    "crash": _stems("crash blankscreen outofmemory fatal segfault"),
    "performance": _stems("slow freeze spinner timeout lag latency performance cpu memory ram battery "
                          "outofmemory sluggish jank fps"),
    "ui": _stems("layout overlap overlaps overlapping misaligned alignment truncated font contrast darkmode "
                 "sidebar tooltip modal dropdown popup scrollbar responsive css stretched squashed blurry "
                 "pixelated spacing icon icons theme colour color"),
    "payments": _stems(TOPICS["payments"]) - _stems("order orders plan trial"),
    "auth": _stems("login logout signup password twofactor sso saml oauth authentication credentials "
                   "username"),
    "network-error": _stems("offline network wifi connection disconnected websocket proxy dns 502 503 504"),
    "notifications": _stems("notification email sms digest unsubscribe inbox"),
    "search": _stems("search"),
    "files": _stems("upload download export import file image video csv pdf xlsx attachment"),
    "localization": _stems("language timezone rtl hebrew arabic german french spanish japanese "
                           "daylight dst"),
    "accessibility": _stems("screenreader accessibility a11y aria voiceover nvda colorblind contrast"),
    "mobile": _stems("phone tablet ios ipad iphone android"),
    "integrations": _stems("slack zapier github gitlab jira trello webhook webhooks api integration "
                           "integrations"),
}

_PHRASES: dict[str, re.Pattern[str]] = {
    "crash": re.compile(r"\b(?:app|it|page|tab) (?:closes|quits|shuts down|dies)\b|\baw,? snap\b"),
    "data-loss": re.compile(r"\b(?:lost|lose|losing)\b[^.]{0,40}\b(?:work|changes|edits|data|document|doc|text)\b"
                            r"|\b(?:changes|edits|data|work|document)\b[^.]{0,40}\b(?:gone|vanished|disappeared|lost)\b"
                            r"|\bnot (?:being )?saved\b"),
    "localization": re.compile(r"\bdate format\b|\bdd/mm\b|\bmm/dd\b|\bdaylight saving\b|\btime ?zone\b"),
    "accessibility": re.compile(r"\bkeyboard only\b|\blow vision\b|\bblind\b"),
    "question": re.compile(r"(?:how|can|could|is there|are there|do you|does|what|where|why|when) [^?]*\?"),
}

_NETWORK_ERROR = re.compile(r"network error|failed to fetch|websocket|econn|connection (?:refused|reset)|"
                            r"timed? ?out|gateway", re.I)
_CRASH_ERROR = re.compile(r"fatal|out of memory|crash|segmentation fault|anr\b", re.I)

Rule = Callable[[Document, frozenset[str], str], str | None]


def _word_rule(label: str) -> Rule:
    words = _WORDS.get(label, frozenset())
    phrase = _PHRASES.get(label)

    def rule(doc: Document, toks: frozenset[str], lower: str) -> str | None:
        hit = sorted(toks & words)
        if hit:
            return f"word '{_surface(hit[0], lower)}'"
        if phrase is not None and (m := phrase.search(lower)):
            return f"phrase '{m.group(0).strip()}'"
        return None

    return rule


def _surface(token: str, lower: str) -> str:
    """The word as the reporter wrote it ("crashed" rather than the token "crash"), when one is found."""
    words: list[str] = re.findall(r"[a-z0-9']+", lower[:5000])
    return next((w for w in words if _word_tokens(w) == (token,)), token)


@functools.lru_cache(maxsize=16384)
def _word_tokens(word: str) -> tuple[str, ...]:
    """`tokens` of one word, kept: `_surface` asks it of every word before the hit, and `tokens` runs the
    phrase patterns over its text (a third of a report's labelling time went there)."""
    return tuple(tokens(word))


def _crash(doc: Document, toks: frozenset[str], lower: str) -> str | None:
    for err in doc.errors:
        if _CRASH_ERROR.search(err.headline):
            return f"error '{err.headline[:60]}'"
    for line in doc.console:
        if _CRASH_ERROR.search(line):
            return f"console '{line[:60]}'"
    return _word_rule("crash")(doc, toks, lower)


def _performance(doc: Document, toks: frozenset[str], lower: str) -> str | None:
    slow = [r for r in doc.requests if r.duration_ms >= 3000 and not r.failed]
    if slow:
        return f"logs: {slow[0].method} {slow[0].path} took {slow[0].duration_ms / 1000:.1f} s"
    return _word_rule("performance")(doc, toks, lower)


def _auth(doc: Document, toks: frozenset[str], lower: str) -> str | None:
    denied = [r for r in doc.requests if r.status in (401, 403)]
    if denied:
        return f"logs: {denied[0].method} {denied[0].path} {denied[0].status}"
    return _word_rule("auth")(doc, toks, lower)


def _network(doc: Document, toks: frozenset[str], lower: str) -> str | None:
    for r in doc.requests:
        if r.status == 0 or r.status >= 500:
            return f"logs: {r.method} {r.path} {r.status or 'failed'}"
    for err in doc.errors:
        if _NETWORK_ERROR.search(err.headline):
            return f"error '{err.headline[:60]}'"
    for line in doc.console:
        if _NETWORK_ERROR.search(line):
            return f"console '{line[:60]}'"
    return _word_rule("network-error")(doc, toks, lower)


def _feature_request(doc: Document, toks: frozenset[str], lower: str) -> str | None:
    said = cues(doc)
    if doc.errors or (doc.type == "bug" and said.problem) or not said.request:
        return None  # a broken thing described politely is still a bug
    return f"phrase '{said.request}'"


def _question(doc: Document, toks: frozenset[str], lower: str) -> str | None:
    if doc.type not in ("chat", "survey") or doc.errors:
        return None
    for sentence in sentences(lower):
        if (m := _PHRASES["question"].match(sentence)) is not None:
            return f"question '{m.group(0)[:60]}'"
    return None


def _praise(doc: Document, toks: frozenset[str], lower: str) -> str | None:
    said = cues(doc)
    if said.problem or doc.errors or not said.praise:
        return None
    return f"phrase '{said.praise}'"


RULES: dict[str, Rule] = {label: _word_rule(label) for label in LABELS} | {
    "crash": _crash, "performance": _performance, "auth": _auth, "network-error": _network,
    "feature-request": _feature_request, "question": _question, "praise": _praise,
}


def derive(doc: Document) -> list[tuple[str, str]]:
    """The labels of a report with the reason for each, at most MAX_LABELS, in the order of LABELS."""
    text = " ".join([doc.words, *(e.headline for e in doc.errors)])
    toks = frozenset(tokens(text)) | frozenset(stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()))
    lower = " ".join(doc.words.lower().split()) if doc.words else ""
    found = []
    for label in LABELS:
        reason = RULES[label](doc, toks, lower)
        if reason is not None:
            found.append((label, reason))
    return found[:MAX_LABELS]
