"""What an interaction says, reduced to comparable terms: the user's words, their errors and failed requests.

A report, a feedback post and a chat about one problem rarely share a sentence, but they share a few
content words once the wording is normalised (phrases like "sign in" and "log in" become one word,
synonyms one canonical word, inflections one stem), and a bug report's logs add what no paraphrase
changes: the error's type and message, its stack frames, the request that failed. Everything here is
plain, deterministic string work, so the same input always gives the same terms.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_CHARS = 20_000
"""Only the first this-many characters of a report's words count (a pasted log dump says no more)."""


@dataclass(frozen=True)
class LogError:
    """One error from the logs: its type, its message with the variable parts masked, its top frames."""

    kind: str
    message: str
    frames: tuple[str, ...]
    headline: str
    """The error as a person would quote it (type and message, shortened), for summaries."""

    @property
    def fingerprint(self) -> str:
        """Stable across occurrences of the same error: type and masked message."""
        return hashlib.blake2b(f"{self.kind}:{self.message}".encode(), digest_size=6).hexdigest()


@dataclass(frozen=True)
class Request:
    """A notable network request from the logs: one that failed, or one that was very slow."""

    method: str
    path: str
    status: int
    duration_ms: float

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 400

    @property
    def status_class(self) -> str:
        return "failed" if self.status == 0 else f"{self.status // 100}xx"


@dataclass(frozen=True)
class Document:
    """The parts of an interaction that enrichment reads."""

    type: str
    title: str = ""
    body: str = ""
    errors: tuple[LogError, ...] = ()
    requests: tuple[Request, ...] = ()
    console: tuple[str, ...] = ()
    """Warning and error lines from the console that are not errors with a type (for labels)."""

    @property
    def words(self) -> str:
        """The user's words: title then body."""
        return f"{self.title}\n{self.body}".strip()

    def for_model(self, limit: int = 4000) -> str:
        """The report as an external model reads it: the user's words, then the top errors and failures."""
        parts = [f"Type: {self.type}"]
        if self.title:
            parts.append(f"Title: {self.title}")
        if self.body:
            parts.append(self.body)
        parts += [f"Error: {e.headline}" + (f" (at {', '.join(e.frames)})" if e.frames else "")
                  for e in self.errors[:3]]
        parts += [f"Request: {r.method} {r.path} -> {r.status or 'failed'}" for r in self.requests[:3]]
        return "\n".join(parts)[:limit]


def document(type_: str, content: dict[str, Any], content_text: str | None,
             logs: dict[str, Any] | None) -> Document:
    """Read an interaction row (and its logs row, if any) into a `Document`."""
    title = next((v for k in ("title", "subject") if isinstance(v := content.get(k), str) and v.strip()), "")
    parts: list[str] = []
    for key in ("text", "description", "steps", "expected", "actual"):
        value = content.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(str(v) for v in value if isinstance(v, str | int | float))
    body = "\n".join(p for p in parts if p.strip())
    if not body and content_text and content_text.strip() != title.strip():
        body = content_text
    logs = logs or {}
    errors = list(_errors(logs.get("errors")))
    console: list[str] = []
    for entry in _dicts(logs.get("console")):
        level = str(entry.get("level", "")).lower()
        if level in ("error", "fatal", "assert"):
            err = _error(entry.get("message"), entry.get("stack"))
            if err is not None and (err.kind != "error" or err.frames):
                errors.append(err)
            elif isinstance(entry.get("message"), str):
                console.append(str(entry["message"])[:300])
        elif level in ("warn", "warning") and isinstance(entry.get("message"), str):
            console.append(str(entry["message"])[:300])
    unique = list({e.fingerprint: e for e in reversed(errors)}.values())[::-1]  # first occurrence wins
    return Document(type=type_, title=title.strip()[:500], body=body[:MAX_CHARS], errors=tuple(unique[:10]),
                    requests=tuple(_requests(logs.get("network")))[:10], console=tuple(console[:20]))


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (v for v in value if isinstance(v, dict))


def _errors(value: Any) -> Iterator[LogError]:
    for entry in _dicts(value):
        err = _error(entry.get("message"), entry.get("stack"), entry.get("type") or entry.get("name"))
        if err is not None:
            yield err


_KIND = re.compile(r"^\s*(?:(?i:uncaught)\s+(?:\(in promise\)\s+)?)?"
                   r"([A-Za-z_$][\w$.]*(?:Error|Exception|Fault))\s*:?\s*(.*)$", re.S)
_V8_FRAME = re.compile(r"^\s*at\s+(?:async\s+)?([^\s(]+)\s*\(")
_GECKO_FRAME = re.compile(r"^\s*([^\s@]+)@")
_PY_FRAME = re.compile(r'^\s*File ".*", line \d+, in (\S+)')
_MASKS = (
    (re.compile(r"https?://\S+"), "<url>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]*\d[0-9a-f]*[a-f][0-9a-f]*\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def _error(message: Any, stack: Any, kind: Any = None) -> LogError | None:
    """An error from a log entry; None when it carries no message at all."""
    text = message if isinstance(message, str) else ""
    stack_text = stack if isinstance(stack, str) else ""
    if not text.strip():
        text = stack_text.strip().splitlines()[0] if stack_text.strip() else ""
    if not text.strip():
        return None
    text = text.strip()[:1000]
    m = _KIND.match(text)
    found_kind, rest = (m.group(1), m.group(2)) if m else ("", text)
    name = (str(kind) if isinstance(kind, str) and kind else found_kind) or "Error"
    masked = rest.lower()
    for pattern, mask in _MASKS:
        masked = pattern.sub(mask, masked)
    frames = tuple(_frames(stack_text))[:3]
    headline = f"{name}: {rest.strip()}" if rest.strip() else name
    return LogError(kind=name.rsplit(".", 1)[-1].lower(), message=masked.strip()[:300], frames=frames,
                    headline=_shorten(headline, 160))


_ANONYMOUS = {"<anonymous>", "anonymous", "<module>", "eval", "new", "Object.<anonymous>", "Array.forEach",
              "Promise.then", "process.processTicksAndRejections", "processTicksAndRejections"}


def _frames(stack: str) -> Iterator[str]:
    """Function names of a stack trace, innermost first (V8, Gecko/WebKit and Python formats)."""
    for line in stack.splitlines():
        m = _V8_FRAME.match(line) or _GECKO_FRAME.match(line) or _PY_FRAME.match(line)
        if m is None:
            continue
        name = m.group(1)
        if name in _ANONYMOUS or name.startswith(("http", "webpack", "node:", "<")):
            continue
        yield name.removeprefix("Object.").removeprefix("async ")


_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-f-]{16,}|[0-9A-Za-z_-]*\d[0-9A-Za-z_-]{7,})$")


def _requests(value: Any) -> Iterator[Request]:
    for entry in _dicts(value):
        status = entry.get("status")
        status = int(status) if isinstance(status, int | float) else 0
        duration = entry.get("duration")
        duration = float(duration) if isinstance(duration, int | float) else 0.0
        if not (status == 0 or status >= 400 or duration >= 3000):
            continue
        url = entry.get("url")
        if not isinstance(url, str):
            continue
        path = urlsplit(url).path or "/"
        path = "/".join(":id" if _ID_SEGMENT.match(s) else s.lower() for s in path.split("/"))[:200]
        method = str(entry.get("method") or "GET").upper()[:10]
        yield Request(method=method, path=path, status=status, duration_ms=duration)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# Normalising words -------------------------------------------------------------------------------------------


def _wordset(text: str) -> frozenset[str]:
    """The whitespace-separated words of a block of text."""
    return frozenset(text.split())


# Multi-word phrases that mean one thing, folded into one word before tokenising.
_PHRASES = tuple((re.compile(p), r) for p, r in (
    (r"\b(?:log(?:ged|ging)?|sign(?:ed|ing)?)[\s-]?(?:in|on)(?:to)?\b", " login "),
    (r"\b(?:log(?:ged|ging)?|sign(?:ed|ing)?|kick(?:s|ed|ing)?(?: me| us)?)[\s-]?out\b", " logout "),
    (r"\bsign(?:ed|ing)?[\s-]?up\b|\bcreat(?:e|ing) (?:an |a new )?account\b|\bregistration\b", " signup "),
    (r"\bcheck[\s-]out\b", " checkout "),
    (r"\b(?:two|2)[\s-]?(?:factor|step)\b|\b2fa\b|\bmfa\b|\bone[\s-]time (?:code|password)\b|\botp\b"
     r"|\b(?:verification|security|auth) codes?\b", " twofactor "),
    (r"\b(?:dark|night) (?:mode|theme)\b", " darkmode "),
    (r"\b(?:white|blank|empty|black) (?:screen|page)\b|\b(?:goes|went|turns|turned|becomes|stays) "
     r"(?:completely )?(?:white|blank)\b", " blankscreen "),
    (r"\b(?:takes?|taking|took) (?:forever|ages|so long|too long|minutes|a long time)\b|\bforever to load\b",
     " slow "),
    (r"\bnothing happens\b|\b(?:does|did|do)(?:n't| not) (?:do )?(?:anything|nothing)\b|\bdoes nothing\b"
     r"|\bno response\b|\bnot respond(?:ing)?\b", " unresponsive "),
    (r"\b(?:credit|debit) cards?\b", " card "),
    (r"\be-mail", " email"),
    (r"\bwi-fi\b", " wifi "),
    (r"\bpop-ups?\b", " popup "),
    (r"\bdrop-?downs?\b", " dropdown "),
    (r"\bscreen ?readers?\b", " screenreader "),
    (r"\bside ?(?:bar|menu|nav(?:igation)?|panel)s?\b", " sidebar "),
    (r"\btext messages?\b|\bsms(?:es)?\b", " sms "),
    (r"\bpush notifications?\b", " notification "),
    (r"\bdark-?mode\b", " darkmode "),
    (r"\bout of memory\b|\boom\b", " outofmemory "),
    (r"\b(?:time[sd]?[\s-]?out|timing out)\b", " timeout "),
    (r"\bdaylight sav\w*(?: time)?\b|\bsummer ?time\b|\bclocks? (?:chang|went|switch|go)\w*(?: forward| back)?\b"
     r"|\bdst\b", " dst "),
    (r"\b(?:without|no) (?:an? )?(?:internet|signal|connection|network|wifi|reception)\b", " offline "),
    (r"\b(?:can ?not|can't|cant|couldn't|unable to|won't|fails? to|failed to)\b", " cannot "),
    (r"\b(?:does|do|did|is|are|was|were)(?:n't| not) (?:show|include|contain|display|list)\w*"
     r"|(?:\bnever|\bnot|n't) (?:\w+ )?(?:arriv\w*|receiv\w*|come|comes|coming|show\w*|get|gets|getting|got"
     r"|gotten)\b", " missing "),
    (r"\btwo times\b|\b2x\b", " twice "),
    (r"\b(?:page |file )?not found\b", " notfound "),
))

# Words that mean the same in a product report, folded into the first word of each group.
_SYNONYMS_TEXT = """
crash crashes crashed crashing crashy quits die dies died dying
freeze freezes freezing froze frozen hang hangs hanging hung stuck
slow slowly sluggish laggy lag lags lagging slowness sluggishness
image images picture pictures photo photos pic pics jpg jpeg png
upload uploads uploading uploaded attach attaching
download downloads downloading downloaded
delete deletes deleted deleting remove removes removed removing erase erased
missing disappeared disappear disappears disappearing vanished vanish gone lost lose loses losing
buy buys buying bought purchase purchases purchasing purchased
pay pays paying paid payment payments
card cards visa mastercard amex
refund refunds refunded
invoice invoices receipt receipts
subscription subscriptions subscribe subscribed renewal renew
price prices pricing expensive cheap cheaper costly cost costs affordable
password passwords passcode
notification notifications notify notified alert alerts
email emails mail mails
search searches searching searched
settings setting preferences preference
error errors exception exceptions
phone phones iphone android mobile smartphone
tablet tablets ipad
video videos
file files attachment attachments attached
document documents doc docs
coupon coupons promo voucher vouchers discount discounts
connection connections internet wifi network connectivity signal reception
save saves saved saving
export exports exported exporting
import imports imported importing
language languages translation translations translated localization locale
calendar calendars
event events meeting meetings appointment appointments
charge charges charged charging billed
increase increases increased increasing hike hikes raise raised jump jumped
font fonts typeface
wrong incorrect
twice duplicate duplicates duplicated
accent accents accented umlaut umlauts diacritic diacritics
broken broke breaks
spinner spinning spins loader
keyboard keyboards
memory ram
recurring recur recurs recurrence recurrent repeat repeats repeating repeated
shortcut shortcuts hotkey hotkeys
"""
_SYNONYMS = {w: line.split()[0] for line in _SYNONYMS_TEXT.strip().splitlines() for w in line.split()}

# Topics: which part of a product a word is about. Summaries prefer sentences with topic words; labels draw
# on them. Grouping does not use them: two problems in one area (a refund, a failing checkout) share a topic
# and are still different problems.
TOPICS: dict[str, tuple[str, ...]] = {
    "payments": ("pay", "buy", "checkout", "card", "refund", "invoice", "subscription", "billing", "bill",
                 "charge", "charged", "cart", "basket", "price", "stripe", "paypal", "coupon", "discount",
                 "order", "orders", "plan", "upgrade", "trial", "tax", "vat", "currency"),
    "auth": ("login", "logout", "signup", "password", "twofactor", "sso", "saml", "oauth", "account",
             "session", "authentication", "credentials", "username", "locked", "reset", "verify", "verification"),
    "performance": ("slow", "freeze", "spinner", "loading", "load", "timeout", "performance", "cpu", "memory",
                    "outofmemory", "battery", "lag", "latency", "fps", "jank", "heavy"),
    "crash": ("crash", "blankscreen", "restart", "restarts", "closes", "outofmemory", "fatal", "exception"),
    "ui": ("button", "layout", "overlap", "overlaps", "overlapping", "misaligned", "alignment", "darkmode",
           "font", "color", "colour", "contrast", "icon", "icons", "modal", "dropdown", "popup", "menu",
           "scroll", "scrolling", "scrollbar", "sidebar", "tooltip", "responsive", "css", "cut", "truncated",
           "style", "theme", "display", "render", "rendering", "screen"),
    "notifications": ("notification", "email", "sms", "digest", "unsubscribe", "inbox", "spam"),
    "files": ("upload", "download", "file", "image", "video", "export", "import", "csv", "pdf", "xlsx",
              "excel", "zip", "avatar"),
    "search": ("search", "filter", "filters", "sort", "sorting", "results", "query"),
    "data": ("missing", "delete", "save", "sync", "syncing", "synced", "duplicate", "duplicated", "history",
             "draft", "drafts", "backup", "restore"),
    "localization": ("language", "timezone", "utc", "date", "format", "currency", "rtl", "arabic", "german",
                     "french", "spanish", "japanese"),
    "accessibility": ("screenreader", "accessibility", "a11y", "contrast", "keyboard", "voiceover", "zoom",
                      "aria", "focus", "blind", "colorblind"),
    "mobile": ("phone", "tablet", "ios", "app store", "landscape", "portrait", "touch", "swipe"),
    "network": ("offline", "connection", "network", "wifi", "timeout", "disconnected", "reconnect", "proxy",
                "vpn", "dns", "ssl", "certificate"),
}

STOPWORDS = _wordset("""
a about above after again against all almost already also although always am among an and another any anybody
anyone anything anyway anywhere are around as at away back be became because become been before being below between
both but by came can come comes coming could did do does doing done down during each either else enough even ever
every everyone everything for from further get gets getting give given go goes going gone got gotten had has have
having he her here hers herself him himself his how however i if in into is it its itself just keep keeps kept know
knows let lets like likes made make makes making many may me might mine more most much must my myself need needs
needed neither never no nor not now of off often ok okay on once one only or other others otherwise our ours
ourselves out over own per perhaps please put quite rather really right said same say says see seem seemed seems
seen several shall she should since so some somebody someone something sometimes somewhat somewhere soon still such
sure take takes taken than thank thanks that the their theirs them themselves then there these they thing things
this those though through thus till to together too toward try tried trying under until up upon us use used uses
using very via want wants wanted was way we well went were what whatever when whenever where wherever whether which
while who whom whose why will with within without would yes yet you your yours yourself yourselves hi hello hey
dear team guys folks cheers regards best im ive id youre youve dont doesnt didnt isnt wasnt werent arent wont cant
cannot couldnt shouldnt wouldnt havent hasnt hadnt thats theres heres whats lol pls plz thx ty btw fyi asap hmm ah
oh um uh also again anymore able happen happens happened happening today yesterday tomorrow morning evening week
weeks day days time times minute minutes hour hours second seconds moment now ago since while last first next new
just still even actually basically literally seriously totally completely app application website site web page
pages issue issues problem problems bug bugs report reporting reported work works working worked show shows showing
shown showed appear appears appeared look looks looking looked go get got think thought feel felt guess hope wish
maybe probably definitely something anything everything nothing lot lots bit little big huge whole every each
another again properly correctly correct fine good great nice bad terrible awful horrible annoying annoyed
frustrating frustrated help helps helped support someone anyone why how what fix fixed fixing please kindly add
feature features request requests option options improve improvement improvements suggestion suggestions idea ideas
love
""")

_WORD = re.compile(r"[a-z][a-z0-9]*(?:'[a-z]+)?|\d{3}")


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix-stripping stem (after Porter's first steps): enough to fold plurals, tenses and a few
    derivations ("crashes", "crashed" → "crash"; "scanner" → "scan"; "temporarily" → "temporari"). Kept per
    word: most of a report's words were seen before, and each is stemmed several times (the summary's,
    the labels' and the signature's tokens)."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "sis", "xis")):  # emojis → emoji, not analysis
        word = word[:-1]
    for suffix, shortest in (("ingly", 3), ("edly", 3), ("ing", 3), ("ed", 3), ("er", 4), ("ly", 3),
                             ("ment", 4), ("ful", 3)):
        if word.endswith(suffix) and len(word) - len(suffix) >= shortest:
            word = word[: -len(suffix)]
            if suffix in ("ingly", "edly", "ing", "ed", "er") and len(word) > 3 and word[-1] == word[-2] \
                    and word[-1] not in "lsz":
                word = word[:-1]  # stopped → stop, scanner → scan
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]  # save/saved → sav, freeze/freezing → freez
    elif len(word) > 4 and word.endswith("y"):
        word = word[:-1] + "i"  # temporary/temporarily → temporari
    return word


_TOPIC_OF = {stem(w): topic for topic, words in TOPICS.items() for w in words if " " not in w}


def topic_of(token: str) -> str | None:
    """The topic a stemmed token belongs to, if any."""
    return _TOPIC_OF.get(token)


def tokens(text: str) -> list[str]:
    """Content tokens of a text: phrases folded, synonyms canonical, stop words dropped, stems."""
    text = text[:MAX_CHARS].lower().replace("’", "'")
    for pattern, replacement in _PHRASES:
        text = pattern.sub(replacement, text)
    out: list[str] = []
    for raw in _WORD.findall(text):
        word = raw.replace("'", "")
        if raw.isdigit():
            if raw[0] in "45":  # an HTTP status the user quotes ("a 500 error")
                out.append(raw)
            continue
        if word in STOPWORDS or raw in STOPWORDS or len(word) < 2:
            continue
        out.append(stem(_SYNONYMS.get(word, word)))
    return out


_SYMPTOM_CLASSES = {
    "breaks": "crash freeze blank screen unresponsive out of memory",
    "slow": "slow timeout lag 502 503 504",
    "missing": "missing empty",
    "refused": "declined rejected refused invalid denied forbidden 400 401 403 409 413 415 422 429",
    "twice": "twice",
    "wrong": "wrong shifted",
    "dropped": "disconnected logged out expired",
    "not-found": "404 410 redirect loop notfound",
    "server-error": "500",
    "looks": "overlaps hidden cut stretched blurry garbled",
    "reset": "reset",
}
SYMPTOMS = {tok: name for name, words in _SYMPTOM_CLASSES.items() for tok in tokens(words)}
"""Tokens that say what goes wrong rather than where, each to its kind of symptom: two reports about one
feature that name different kinds ("posted twice", "keeps disconnecting") are likely two problems, while
"crashes" and "goes white" are one kind said two ways."""


# What kind of report ----------------------------------------------------------------------------------------------

_REQUEST = re.compile(
    r"\b(?:please|pls|could you|can you|would you)(?: please)? (?!fix|help|check|look|advise|hurry|tell|explain)[a-z]+"
    r"|(?:^|[.!?:] )(?:add|show|let|allow|make|support|give|provide|offer|include|group|link|expose|enable) "
    r"|\bwould (?:really )?(?:love|like|appreciate)\b|\b(?:it|that|this) would (?:be|make|help|save|let)\b"
    r"|\bwould be (?:\w+ )?(?:nice|great|useful|helpful|handy|good|awesome|cool)\b"
    r"|\b(?:i|we)(?:'d| would) (?:love|like|prefer)\b|\bfeature request\b|\b(?:any|are there) plans\b|\broadmap\b"
    r"|\blet (?:us|me|users|people|admins)\b|\ballow (?:us|me|users|people)\b|\bsupport for\b|\bgive us\b"
    r"|\b(?:we|i) (?:need|want) (?:a|an|to be able|some|more|the option|an option|support)\b"
    r"|\bwhat(?:'s| is) missing\b|\bwhat (?:would|should|could) (?:you|we) (?:improve|change|add|build)\b"
    r"|\b(?:anything|something) (?:you'd|you would) like\b|\bwhich feature\b|\bwhat (?:feature|one thing)\b"
    r"|\bwish (?:list|there was|there were|i could|we could)\b|\bshould (?:be able to|have an?|offer|support|let)\b"
    r"|\b(?:option|setting) to\b")
_QUESTION = re.compile(r"\b(?:is|are) there (?:a|an|any)\b|\bdo you (?:have|support|offer|plan)\b"
                       r"|\b(?:can|could) (?:i|we)\b|\b(?:how|where) (?:do|can|could|should) (?:i|we)\b")
"""Asking whether or how something can be done: something wanted or not known, not something broken."""
_PROBLEM = re.compile(
    r"\b(?:does|did|do|is|are|was|were|has|have)(?:n't| not| no longer) (?:\w+ )?(?:work|load|show|open|appear|arrive"
    r"|come|save|sync|respond|match|display|play|fire|keep|stay|get|receive|find|return|include|register)\w*"
    r"|\bno longer\b|\bnot (?:working|loading|showing|arriving|receiving|getting|found|responding|saving)\b"
    r"|\bnever (?:arrive|come|show|load|finish|appear|work|match|get|receive|stop|play)\w*"
    r"|\b(?:broken|broke|breaks|fail(?:s|ed|ing|ure)?|errors?|crash\w*|freez\w*|froze|stuck|hangs?|wrong|incorrect"
    r"|missing|disappear\w*|vanish\w*|lost|loses|rejected|declined|invalid|denied|forbidden|expired|corrupt\w*"
    r"|garbled|blank|stretched|squashed|cut off|overlap\w*|misaligned|unresponsive|buggy|glitch\w*|bug)\b"
    r"|\b(?:can't|cannot|can not|unable to|couldn't|won't)\b|\bnothing happens\b|\bdoes nothing\b"
    r"|\bkeeps? (?:\w+ing|getting)\b|\bstopped\b|\btime[sd]? out\b"
    r"|\btoo (?:slow|small|big|long|strict|bright|expensive)\b"
    r"|\b(?:since|after) (?:the|yesterday|today|this|last|updating|upgrading|we|i)\b|\b[45]\d\d\b|\binstead of\b"
    r"|\b(?:every|each) time\b|\btwice\b|\bslow\w*")
_PRAISE = re.compile(r"\b(?:thanks?|thank you|love|loving|great (?:job|work)|well done|brilliant|awesome|amazing"
                     r"|fantastic|kudos|exactly what (?:we|i) needed|nice work)\b")
_HOW_TO = re.compile(r"\b(?:can't|cannot|couldn't|could not|can not|unable to) (?:find|see|figure out|work out)\b")
"""Not finding how to do something is a question, not a sign that something is broken."""


@dataclass(frozen=True)
class Cues:
    """What a report's words say it is: the first phrase that says something is broken, that something is
    wanted, that asks whether or how something can be done, that something is liked (each "" when none
    does); and whether it is a bug report or has errors or failed requests in its logs."""

    problem: str
    request: str
    question: str
    praise: str
    broken: bool

    @property
    def kind(self) -> str:
        """`problem`, `request`, `praise`, or "" when the report says both or neither. A request and a problem
        about one feature ("add GIF avatars", "my avatar is stretched") are seldom one report twice."""
        problem, wanted = bool(self.problem) or self.broken, bool(self.request or self.question)
        if problem and not wanted:
            return "problem"
        if wanted and not problem:
            return "request"
        return "praise" if self.praise and not problem and not wanted else ""


@functools.lru_cache(maxsize=16)
def cues(doc: Document) -> Cues:
    """The kind cues of a report (see `Cues`). Kept for the last few documents (a `Document` is frozen; a
    worker's jobs in hand, not more, as a document holds its whole text): the labels and the signature of
    one report each ask for them, and their four patterns are the costliest part of reading it (~60 µs a
    call)."""
    said = ". ".join(part for part in (doc.title, doc.body) if part)
    text = _HOW_TO.sub(" ", " ".join(said.lower().replace("’", "'").split()))
    problem, request, question, praise = (m.group(0) if (m := p.search(text)) else ""
                                          for p in (_PROBLEM, _REQUEST, _QUESTION, _PRAISE))
    broken = doc.type == "bug" or bool(doc.errors) or any(r.failed for r in doc.requests)
    return Cues(problem, request, question, praise, broken)


def sentences(text: str) -> list[str]:
    """Sentences (or lines) of a text, trimmed, in order."""
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip(" \t-*•") for p in parts if p and p.strip(" \t-*•")]


def sublinear(counts: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Sum weights per term, then damp repetition (1 + ln w): saying "crash" five times is not five crashes."""
    total: dict[str, float] = {}
    for term, weight in counts:
        total[term] = total.get(term, 0.0) + weight
    return {t: (1.0 + math.log(w)) if w > 1.0 else w for t, w in total.items()}
