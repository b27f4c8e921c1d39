"""Extractive summaries: the report's own most informative words, never invented ones.

A triager scanning a list wants one line: the title when the reporter wrote one, else the sentence that
carries the most content (problem words and topic words count more, greetings and thanks nothing), and
the error that the logs point at. Nothing is paraphrased, so a summary can be wrong only by choosing.
"""

from __future__ import annotations

import math
import re

from cell.enrichment.text import Document, sentences, tokens, topic_of

METHOD = "local-extractive-v1"
"""`ai_method.summary` of these summaries."""
MAX_LEN = 280
PROBLEM_WORDS = frozenset(tokens(
    "crash error fail failed broken cannot unresponsive freeze slow missing wrong blankscreen timeout lost "
    "stuck disappeared charged twice expired not found 404 500 502 503 504 denied rejected invalid"
))
_GREETING = frozenset(tokens("hi hello hey thanks thank you cheers regards best please help"))
_SALUTATION = re.compile(
    r"^(?:(?:hi|hello|hey|hallo|dear [\w ]{1,30}|good (?:morning|afternoon|evening))\b[\s,!.:-]*)+", re.I)


def _unsalute(sentence: str) -> str:
    """A sentence without the "Hi," or "Hello team!" it opens with."""
    rest = _SALUTATION.sub("", sentence).strip()
    return rest[:1].upper() + rest[1:] if rest != sentence else rest


def sentence_score(sentence: str, position: int) -> float:
    """How much a sentence says about the problem: content words, more for problem and topic words,
    a little more early in the text, normalised so long rambling sentences do not win by length."""
    toks = tokens(sentence)
    if not toks:
        return 0.0
    weight = sum(2.0 if t in PROBLEM_WORDS else 1.5 if topic_of(t) else 1.0 for t in toks if t not in _GREETING)
    return float(weight / math.sqrt(len(toks)) * (1.0 + 0.25 / (1 + position)))


def extractive(doc: Document, limit: int = MAX_LEN) -> str | None:
    """One line about the report: title or best sentence (plus a second one if the first is short), then
    the first error from the logs. None when the report has neither words nor errors."""
    parts: list[str] = []
    if doc.title:
        parts.append(doc.title.rstrip(".:"))
    body = [_unsalute(s) for s in sentences(doc.body)]
    body = [s for s in body if s and s.lower().strip(" .!?:") != doc.title.lower().strip(" .!?:")]
    if body and (not doc.title or len(tokens(doc.title)) < 3):
        ranked = sorted(range(len(body)), key=lambda i: -sentence_score(body[i], i))
        best = ranked[0]
        if sentence_score(body[best], best) > 0:
            chosen = [best]
            if len(tokens(body[best])) < 5 and len(ranked) > 1 and sentence_score(body[ranked[1]], ranked[1]) > 0:
                chosen.append(ranked[1])
            parts.append(" ".join(body[i] for i in sorted(chosen)))
    if doc.errors:
        parts.append(doc.errors[0].headline)
    elif (failed := [r for r in doc.requests if r.failed]):
        r = failed[0]
        parts.append(f"{r.method} {r.path} {r.status or 'failed'}")
    text = " — ".join(p.strip() for p in parts if p.strip())
    if not text:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
