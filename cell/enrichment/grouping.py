"""Duplicate grouping: TF-IDF cosine similarity over normalised terms, groups joined online.

Each interaction gets a signature (weighted terms from its words, errors and failed requests; optionally a
provider's embedding). A new interaction is compared with the project's earlier ones — every type, so a
bug report, a feedback post and a chat about one problem meet — with inverse document frequencies taken
from those same earlier interactions, so words every report uses ("checkout" in a shop) weigh little
and rare shared ones (an error fingerprint, a feature's name) weigh much. It joins the group that scores
best when that score clears the threshold (see `decide`); when it is close to several groups it merges
them. Group ids are the id of the group's first interaction, so an id never changes once given, except by
a merge, which always keeps the smallest id (the oldest, for time-ordered ids) — whichever worker runs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cell.enrichment.text import Document, sublinear, tokens

METHOD = "local-v1"
"""Version of the term scheme: signatures of another version are not compared with these."""

THRESHOLD = 0.32
"""Similarity from which a new interaction joins a group (chosen on the benchmark's development set)."""
MERGE_THRESHOLD = 0.42
"""Similarity to a member of a second group from which the two groups are merged."""
EMBEDDING_THRESHOLD = 0.85
"""Default cosine similarity of provider embeddings from which two interactions are duplicates."""

# How much each kind of evidence weighs (before IDF).
TITLE, BODY = 1.5, 1.0
ERROR_ID, ERROR_WORDS, FRAME, REQUEST, REQUEST_WORDS = 2.0, 0.5, 1.0, 1.5, 0.5
MAX_KEYS = 8


@dataclass
class Signature:
    """What is stored per interaction to compare it with later ones: weighted terms from the user's words,
    weighted terms from the logs, and an embedding when the provider gives one."""

    terms: dict[str, float]
    log_terms: dict[str, float] = field(default_factory=dict)
    embedding: list[float] | None = None
    embedding_model: str = ""

    def all_terms(self) -> dict[str, float]:
        """Words and logs together (a term in both adds up)."""
        merged = dict(self.terms)
        for t, w in self.log_terms.items():
            merged[t] = merged.get(t, 0.0) + w
        return merged


def _words(counts: list[tuple[str, float]], text: str, weight: float) -> None:
    counts.extend((tok, weight) for tok in tokens(text))


def signature(doc: Document) -> Signature:
    """The local signature of a document: word stems of the title and body; error fingerprints,
    the errors' words, stack frames and failed requests of the logs."""
    words: list[tuple[str, float]] = []
    _words(words, doc.title, TITLE)
    _words(words, doc.body, BODY)
    logs: list[tuple[str, float]] = []
    for err in doc.errors:
        logs.append(("err:" + err.fingerprint, ERROR_ID))
        _words(logs, err.headline, ERROR_WORDS)
        logs.extend(("fn:" + frame.lower(), FRAME) for frame in err.frames)
    for req in doc.requests:
        if req.failed:
            logs.append((f"net:{req.method} {req.path} {req.status_class}", REQUEST))
        _words(logs, req.path.replace("/", " ").replace(":id", " "), REQUEST_WORDS)
    return Signature(sublinear(words), sublinear(logs))


def keys(sig: Signature) -> list[str]:
    """Every distinct term, to find earlier interactions sharing any of them (an inverted index)."""
    return sorted(set(sig.terms) | set(sig.log_terms))


class Idf:
    """Inverse document frequencies over a set of signatures (smoothed: unseen terms weigh most)."""

    def __init__(self, docs: Iterable[Signature]) -> None:
        self.n = 0
        self.df: dict[str, int] = {}
        for d in docs:
            self.n += 1
            for t in set(d.terms) | set(d.log_terms):
                self.df[t] = self.df.get(t, 0) + 1

    def __call__(self, term: str) -> float:
        return math.log((self.n + 1) / (self.df.get(term, 0) + 1)) + 1.0

    def top(self, sig: Signature, k: int = MAX_KEYS) -> list[str]:
        """The k terms of a signature that weigh most here: what an inverted-index lookup should use."""
        terms = sig.all_terms()
        return sorted(terms, key=lambda t: (-terms[t] * self(t), t))[:k]


def _unit(terms: dict[str, float], idf: Idf) -> dict[str, float]:
    raw = {t: w * idf(t) for t, w in terms.items()}
    norm = math.sqrt(sum(v * v for v in raw.values())) or 1.0
    return {t: v / norm for t, v in raw.items()}


def _dot(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(t, 0.0) for t, v in a.items())


class Vector:
    """A signature's TF-IDF vectors, normalised: of the user's words alone, and of words and logs."""

    __slots__ = ("full", "sig", "words")

    def __init__(self, sig: Signature, idf: Idf) -> None:
        self.sig = sig
        self.words = _unit(sig.terms, idf)
        self.full = _unit(sig.all_terms(), idf) if sig.log_terms else self.words

    def cosine(self, other: Vector) -> float:
        """The closer of two readings: everything compared with everything, or the words alone (so a chat
        without logs is not pushed away from a bug report by the report's stack trace)."""
        full = _dot(self.full, other.full)
        if self.full is self.words and other.full is other.words:
            return full
        return max(full, _dot(self.words, other.words))


def embedding_cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two embeddings of equal length (0 when either is zero or they differ in length)."""
    if len(a) != len(b) or not a:
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


@dataclass
class Candidate:
    """An earlier interaction of the project, as stored: its id, group and signature."""

    interaction_id: str
    group_id: str
    signature: Signature


@dataclass
class Thresholds:
    """When two interactions count as duplicates, and when two groups merge."""

    join: float = THRESHOLD
    merge: float = MERGE_THRESHOLD
    embedding: float = EMBEDDING_THRESHOLD


@dataclass
class Decision:
    """Where a new interaction goes: its group, the groups merged into it, and how sure that is."""

    group_id: str
    merged: list[str] = field(default_factory=list)
    matched: str | None = None
    """The most similar earlier interaction that decided the group, if any."""
    similarity: float = 0.0
    """Similarity to the closest earlier interaction (whether or not it was close enough)."""

    @property
    def confidence(self) -> float:
        """How clear the decision is: the match's similarity when joined, else how far from any match."""
        return round(self.similarity if self.matched else 1.0 - self.similarity, 4)


def similarity(new: Vector, old: Vector, limits: Thresholds) -> tuple[float, float]:
    """Similarity of two interactions and the threshold it must clear: embeddings when both have them from
    the same model, else the local TF-IDF cosine."""
    a, b = new.sig, old.sig
    if a.embedding and b.embedding and a.embedding_model and a.embedding_model == b.embedding_model:
        return embedding_cosine(a.embedding, b.embedding), limits.embedding
    return new.cosine(old), limits.join


def decide(interaction_id: str, sig: Signature, candidates: Sequence[Candidate], idf: Idf,
           limits: Thresholds | None = None) -> Decision:
    """Choose the group of a new interaction among the earlier ones.

    A group's score is the mean of its closest member's similarity and the average similarity of all its
    members (each as a margin over the threshold that pair must clear). The closest member alone would
    chain: one report loosely like one member of a group would join, and the next report loosely like
    it would follow, until unrelated problems share a group. The average alone would keep a new wording
    out of a large group whose other members happen to say it differently.
    """
    limits = limits or Thresholds()
    if not sig.terms and not sig.log_terms and not sig.embedding:
        return Decision(group_id=interaction_id)  # nothing to compare: a group of its own
    new = Vector(sig, idf)
    members: dict[str, list[tuple[float, float, str]]] = {}  # group -> [(margin, similarity, member)]
    closest = 0.0
    for cand in candidates:
        score, needed = similarity(new, Vector(cand.signature, idf), limits)
        closest = max(closest, score)
        members.setdefault(cand.group_id, []).append((score - needed, score, cand.interaction_id))
    scored = []
    for group, found in members.items():
        best = max(found)
        mean = sum(m for m, _, _ in found) / len(found)
        scored.append(((best[0] + mean) / 2, group, best[1], best[2]))
    joined = sorted((x for x in scored if x[0] >= 0), key=lambda x: (-x[0], x[1]))
    if not joined:
        return Decision(group_id=interaction_id, similarity=closest)
    _, group, score, member = joined[0]
    groups = [group] + [g for m, g, _, _ in joined[1:] if m >= limits.merge - limits.join]
    keep = min(groups)
    return Decision(group_id=keep, merged=sorted(g for g in groups if g != keep), matched=member,
                    similarity=score)
