"""Duplicate grouping: TF-IDF cosine similarity over normalised terms, groups joined online.

Each interaction gets a signature (weighted terms from its words, errors and failed requests; its kind:
problem, request or praise; optionally a provider's embedding). A new interaction is compared with the
project's earlier ones — every type, so a bug report, a feedback post and a chat about one problem meet —
with inverse document frequencies taken from those same earlier interactions, so words every report uses
("checkout" in a shop) weigh little and rare shared ones (an error fingerprint, a feature's name) weigh
much. Rare shared words say two reports are about one feature, not that they are about one problem: a
near miss ("Slack messages posted twice" beside "Slack keeps disconnecting", "add GIF avatars" beside "my
avatar is stretched") shares the feature's name and differs in what goes wrong. So the cosine is damped
when two reports disagree on what they are (a request and a problem), on their symptoms, or on the errors
and failed requests in their logs (see `agreement`). A new interaction joins the group that scores best
when that score clears the threshold (see `decide`); when it is close to several groups it merges
them. When both reports carry an embedding of the worker's own model (`embedding.MODEL`, the local
provider's), the score mixes the word cosine and the embedding cosine half and half, damped alike: the
embedding knows that "goes white" and "goes blank" say one thing, the words keep exact error fingerprints
and feature names. Embeddings of an external provider's model are compared alone (see `similarity`).
Group ids are the id of the group's first interaction, so an id never changes once given, except by
a merge, which always keeps the smallest id (the oldest, for time-ordered ids) — whichever worker runs it.

A worker compares each new report with about a thousand earlier ones, so `decide` scores them all at once:
each signature's terms become integer ids and weights once (`_prepare`, kept with the signature and, across
reports, in the worker's `SignatureCache`), the TF-IDF cosines are sparse dot products in numpy and the
embedding cosines one matrix product (`_Window`). `Vector`, `similarity` and `agreement` define the same
scores pair by pair; a unit test holds the two to the same decisions.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from cell.enrichment import embedding as local_embedding
from cell.enrichment.text import SYMPTOMS, Document, cues, sublinear, tokens

METHOD = "local-v5"
"""Version of the method (terms, embedding, cut): signatures of another version are not compared with these;
`ai_method.grouping` names it on every interaction."""
AUTO_PRECISION = 0.95
"""The pairwise precision the automatic cut (`MIXED_THRESHOLD`) is calibrated for, on the labelled tuning
parts (bench/enrichment.py): below it the workers only suggest (`GET …/similar`), a person decides."""

THRESHOLD = 0.35
"""Word similarity from which a new interaction joins a group (chosen on the benchmark's dev, test and
holdout2 reports)."""
MIXED_THRESHOLD = 0.52
"""Mixed similarity (words and local embedding, see `MIX`) from which a worker joins a new interaction to a
group on its own: the automatic cut, calibrated by bench/enrichment.py on the tuning parts (dev, test,
holdout2, holdout3) interleaved for pairwise precision ≥ `AUTO_PRECISION` (there: 0.958 at 0.52, 0.945 at
0.51; local-v4 joined from 0.45, 0.93 there). Below it the workers only suggest (`GET …/similar`)."""
MIX = 0.5
"""Weight of the word cosine in the mixed similarity; the local embedding's cosine has the rest."""
MERGE_THRESHOLD = 0.42
"""Similarity to a member of a second group from which the two groups are merged."""
EMBEDDING_THRESHOLD = 0.85
"""Default cosine similarity of provider embeddings from which two interactions are duplicates."""

# How much each kind of evidence weighs (before IDF).
TITLE, BODY = 1.5, 1.0
ERROR_ID, ERROR_WORDS, FRAME, REQUEST, REQUEST_WORDS = 2.0, 0.5, 1.0, 1.5, 0.5
MAX_KEYS = 8

# How much a disagreement damps the cosine of two reports (1 would ignore it).
OTHER_KIND, PRAISE_AND_OTHER, OTHER_SYMPTOMS, OTHER_LOGS = 0.6, 0.5, 0.85, 0.7

KIND_MARK = "kind:"
"""Prefix of the marker term that stores a signature's kind among its terms (no word token has a colon)."""


@dataclass
class Signature:
    """What is stored per interaction to compare it with later ones: weighted terms from the user's words,
    weighted terms from the logs, and an embedding when the provider gives one."""

    terms: dict[str, float]
    log_terms: dict[str, float] = field(default_factory=dict)
    embedding: list[float] | None = None
    embedding_model: str = ""
    kind: str = ""
    """`problem`, `request`, `praise` or "" (see `text.Cues.kind`): compared, never weighed."""
    _array: npt.NDArray[np.float64] | None = field(default=None, init=False, repr=False, compare=False)
    _prepared: _Prepared | None = field(default=None, init=False, repr=False, compare=False)

    def array(self) -> npt.NDArray[np.float64]:
        """The embedding as a numpy vector, made once (a signature meets many others)."""
        if self._array is None:
            self._array = np.asarray(self.embedding or [], dtype=np.float64)
        return self._array

    def stored_terms(self) -> dict[str, float]:
        """The terms as stored: with the kind as a marker term of weight 0 (it has no column of its own)."""
        return {**self.terms, KIND_MARK + self.kind: 0.0} if self.kind else dict(self.terms)

    @classmethod
    def from_stored(cls, terms: dict[str, float], log_terms: dict[str, float], embedding: list[float] | None,
                    embedding_model: str) -> Signature:
        """A signature as `stored_terms` and the other columns keep it."""
        kind = next((t.removeprefix(KIND_MARK) for t in terms if t.startswith(KIND_MARK)), "")
        words = {t: w for t, w in terms.items() if not t.startswith(KIND_MARK)}
        return cls(words, log_terms, embedding, embedding_model, kind)

    def all_terms(self) -> dict[str, float]:
        """Words and logs together (a term in both adds up)."""
        merged = dict(self.terms)
        for t, w in self.log_terms.items():
            merged[t] = merged.get(t, 0.0) + w
        return merged


class SignatureCache:
    """The signatures a worker has read, by (project, interaction), the least recently used dropped past
    `limit`. A worker compares every new report with the project's latest thousand; reading and preparing
    those signatures again for every report would cost it more than the comparison (~30 ms a report), while
    a stored signature of one method never changes (`queries.resign` only rewrites another method's)."""

    def __init__(self, limit: int = 5000) -> None:
        self.limit = limit
        self.entries: OrderedDict[Hashable, Signature] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self.entries

    def get(self, key: Hashable) -> Signature | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: Hashable, sig: Signature) -> None:
        _prepare(sig)
        self.entries[key] = sig
        self.entries.move_to_end(key)
        while len(self.entries) > self.limit:
            self.entries.popitem(last=False)


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
    return Signature(sublinear(words), sublinear(logs), kind=cues(doc).kind)


def keys(sig: Signature) -> list[str]:
    """Every distinct term, to find earlier interactions sharing any of them (an inverted index)."""
    return sorted(set(sig.terms) | set(sig.log_terms))


class _Vocabulary:
    """Process-wide ids of terms, so that a signature's terms become integer arrays once (`_prepare`) and a
    decision compares hundreds of them with numpy instead of dict by dict. Bounded, for memory and because
    `Idf` counts by id: past `limit` terms the ids start afresh (a new `generation`) at the next `Idf`, and
    signatures prepared before are prepared again when next met."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.ids: dict[str, int] = {}
        self.generation = 0

    def lookup(self, terms: Iterable[str]) -> npt.NDArray[np.intp]:
        ids = self.ids
        return np.fromiter((ids.setdefault(t, len(ids)) for t in terms), dtype=np.intp)

    def renew_if_full(self) -> None:
        if len(self.ids) > self.limit:
            self.ids = {}
            self.generation += 1


_VOCABULARY = _Vocabulary()

_SYMPTOM_BITS = {name: 1 << n for n, name in enumerate(sorted(set(SYMPTOMS.values())))}


@dataclass(slots=True)
class _Prepared:
    """What `decide` reads of a signature, made once per signature: its word terms and all its terms (words
    and logs) as term ids and raw weights, its symptoms as bits, its log evidence and its kind."""

    generation: int
    word_ids: npt.NDArray[np.intp]
    word_weights: npt.NDArray[np.float64]
    full_ids: npt.NDArray[np.intp]
    """Ids of every distinct term (also what document frequencies count)."""
    full_weights: npt.NDArray[np.float64]
    has_logs: bool
    symptoms: int
    evidence: frozenset[str]
    kind: str
    model: str
    """The embedding's model, "" without an embedding (a signature's embedding is set before it is compared)."""
    dimensions: int


def _prepare(sig: Signature) -> _Prepared:
    found = sig._prepared
    if found is not None and found.generation == _VOCABULARY.generation:
        return found
    word_ids = _VOCABULARY.lookup(sig.terms)
    word_weights = np.fromiter(sig.terms.values(), dtype=np.float64, count=len(sig.terms))
    if sig.log_terms:
        merged = sig.all_terms()
        full_ids = _VOCABULARY.lookup(merged)
        full_weights = np.fromiter(merged.values(), dtype=np.float64, count=len(merged))
    else:
        full_ids, full_weights = word_ids, word_weights
    symptoms = 0
    for t in sig.terms:
        if t in SYMPTOMS:
            symptoms |= _SYMPTOM_BITS[SYMPTOMS[t]]
    found = _Prepared(_VOCABULARY.generation, word_ids, word_weights, full_ids, full_weights, bool(sig.log_terms),
                      symptoms, _evidence(sig.log_terms), sig.kind, sig.embedding_model if sig.embedding else "",
                      len(sig.embedding or ()))
    sig._prepared = found
    return found


class Idf:
    """Inverse document frequencies over a set of signatures (smoothed: unseen terms weigh most)."""

    def __init__(self, docs: Iterable[Signature]) -> None:
        _VOCABULARY.renew_if_full()  # between decisions only
        self.docs = list(docs)
        self.n = len(self.docs)
        self._count()

    def _count(self) -> None:
        """Document frequencies by term id, up to the largest id these documents have (the vocabulary is
        bounded, `_Vocabulary.limit`), so a decision reads them with one gather."""
        self.generation = _VOCABULARY.generation
        ids = [_prepare(d).full_ids for d in self.docs]
        self._df = np.bincount(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.intp)

    def frequencies(self, ids: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """Document frequency of each term id (0 for terms none of these documents has)."""
        if self.generation != _VOCABULARY.generation:  # renewed by another decision meanwhile
            self._count()
        inside = ids < len(self._df)
        if inside.all():
            found: npt.NDArray[np.intp] = self._df[ids]
            return found
        found = np.zeros(len(ids), dtype=np.intp)
        found[inside] = self._df[ids[inside]]
        return found

    def weights(self, ids: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """The inverse document frequency of each term id (as `__call__` gives it for one term)."""
        weights: npt.NDArray[np.float64] = np.log((self.n + 1) / (self.frequencies(ids) + 1.0)) + 1.0
        return weights

    def __call__(self, term: str) -> float:
        found = _VOCABULARY.ids.get(term)
        count = int(self.frequencies(np.array([found], dtype=np.intp))[0]) if found is not None else 0
        return math.log((self.n + 1) / (count + 1)) + 1.0

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


def _evidence(log_terms: dict[str, float]) -> frozenset[str]:
    """What the logs pin a report to: its errors' fingerprints and the paths of its failed requests."""
    found = set()
    for term in log_terms:
        if term.startswith("err:"):
            found.add(term)
        elif term.startswith("net:"):
            found.add("path:" + " ".join(term.split(" ")[1:-1]))  # net:METHOD /path CLASS
    return frozenset(found)


class Vector:
    """A signature's TF-IDF vectors, normalised: of the user's words alone, and of words and logs; with the
    symptoms its words name and the evidence its logs hold."""

    __slots__ = ("evidence", "full", "sig", "symptoms", "words")

    def __init__(self, sig: Signature, idf: Idf) -> None:
        self.sig = sig
        self.words = _unit(sig.terms, idf)
        self.full = _unit(sig.all_terms(), idf) if sig.log_terms else self.words
        self.symptoms = frozenset(SYMPTOMS[t] for t in sig.terms if t in SYMPTOMS)
        self.evidence = _evidence(sig.log_terms)

    def cosine(self, other: Vector) -> float:
        """The closer of two readings: everything compared with everything, or the words alone (so a chat
        without logs is not pushed away from a bug report by the report's stack trace)."""
        full = _dot(self.full, other.full)
        if self.full is self.words and other.full is other.words:
            return full
        return max(full, _dot(self.words, other.words))


def agreement(a: Vector, b: Vector) -> float:
    """How far two reports' cosine counts (1.0, or less when they disagree): a request beside a problem,
    praise beside anything else, symptoms named on both sides with none in common, errors and failed
    requests in both logs with none in common. Each is weak alone (a missing feature is both wanted and
    broken, people name one symptom differently), so each only damps."""
    factor = 1.0
    ka, kb = a.sig.kind, b.sig.kind
    if ka and kb and ka != kb:
        factor *= PRAISE_AND_OTHER if "praise" in (ka, kb) else OTHER_KIND
    if a.symptoms and b.symptoms and not a.symptoms & b.symptoms:
        factor *= OTHER_SYMPTOMS
    if a.evidence and b.evidence and not a.evidence & b.evidence:
        factor *= OTHER_LOGS
    return factor


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
    """Merging needs `merge - join` over whichever threshold the pair must clear."""
    embedding: float = EMBEDDING_THRESHOLD
    mixed: float = MIXED_THRESHOLD


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
    """Similarity of two interactions and the threshold it must clear: an external model's embeddings
    alone when both have them from that model; the local TF-IDF cosine mixed with the local model's
    embedding cosine, damped by their disagreements (`agreement`), when both have a local embedding; else
    the TF-IDF cosine alone, damped likewise."""
    a, b = new.sig, old.sig
    if by_embedding(a, b):
        return embedding_cosine(a.embedding or [], b.embedding or []), limits.embedding
    if mixed(a, b):
        both = MIX * new.cosine(old) + (1 - MIX) * _cosine(a.array(), b.array())
        return both * agreement(new, old), limits.mixed
    return new.cosine(old) * agreement(new, old), limits.join


def _cosine(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms else 0.0


def _same_model(a: Signature, b: Signature) -> bool:
    return bool(a.embedding and b.embedding and a.embedding_model and a.embedding_model == b.embedding_model)


def by_embedding(a: Signature, b: Signature) -> bool:
    """Whether two signatures are compared by their embeddings alone (both have one, from the same external
    model)."""
    return _same_model(a, b) and a.embedding_model != local_embedding.MODEL


def mixed(a: Signature, b: Signature) -> bool:
    """Whether two signatures are compared by words and the local model's embeddings together."""
    return _same_model(a, b) and a.embedding_model == local_embedding.MODEL


def decide(interaction_id: str, sig: Signature, candidates: Sequence[Candidate], idf: Idf,
           limits: Thresholds | None = None) -> Decision:
    """Choose the group of a new interaction among the earlier ones.

    A group's score is the mean of its closest member's similarity and of how close the group is as a
    whole (each as a margin over the threshold that pair must clear). The closest member alone would
    chain: one report loosely like one member of a group would join, and the next report loosely like
    it would follow, until unrelated problems share a group. The group as a whole is the better of the
    average similarity of its members and the similarity to their centroid (the sum of their word
    vectors, damped by the members' mean `agreement`): the centroid holds every wording the group has seen,
    so a new report that says one thing like one member and another like a second still finds it, while
    a report that shares a single word with a single member stays weak against it. When every such member
    is compared with the new report by words and local embedding (`mixed`), the centroid is mixed alike:
    the word centroid's cosine and the cosine to the sum of their embeddings, weighed by `MIX`.
    """
    limits = limits or Thresholds()
    if not sig.terms and not sig.log_terms and not sig.embedding:
        return Decision(group_id=interaction_id)  # nothing to compare: a group of its own
    if not candidates:
        return Decision(group_id=interaction_id)
    window = _Window(sig, candidates, idf)
    score, needed, agreed, words_dot, emb_dot, centroid = window.pairs(limits)
    margin = score - needed
    closest = max(0.0, float(score.max()))

    # Per group (numbered in order of first appearance): its closest member's margin, the mean margin of its
    # members, and the centroid of its members compared by words (with their agreement, count, and the sum
    # of their local embeddings when every one of them is compared by words and embedding alike).
    group_of: dict[str, int] = {}
    index = np.fromiter((group_of.setdefault(c.group_id, len(group_of)) for c in candidates), dtype=np.intp,
                        count=len(candidates))
    n = len(group_of)
    by_group = np.argsort(index, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(index[by_group]) != 0])
    best = np.maximum.reduceat(margin[by_group], starts)
    whole = np.bincount(index, margin, n) / np.bincount(index, minlength=n)
    count = np.bincount(index, centroid.astype(np.float64), n)
    several = np.flatnonzero(count > 1)
    if len(several):
        members = np.flatnonzero(centroid & (count[index] > 1))
        norm = window.centroid_norms(members, index, n)
        words = np.bincount(index[members], words_dot[members], n) / norm
        agree = np.bincount(index[members], agreed[members], n)
        mixed_members = members[window.mixed[members]]
        all_mixed = np.bincount(index[mixed_members], minlength=n) == count
        emb = window.centroid_embedding_cosines(mixed_members, index, n, emb_dot)
        centre = np.where(all_mixed, (MIX * words + (1 - MIX) * emb) * agree / np.maximum(count, 1) - limits.mixed,
                          words * agree / np.maximum(count, 1) - limits.join)
        whole[several] = np.maximum(whole[several], centre[several])
    overall = (best + whole) / 2
    names = list(group_of)
    joined = sorted((float(overall[g]), names[g], g) for g in np.flatnonzero(overall >= 0))
    if not joined:
        return Decision(group_id=interaction_id, similarity=closest)
    joined.sort(key=lambda x: (-x[0], x[1]))
    _, group, g = joined[0]
    # Its closest member, ties broken as a comparison of (margin, similarity, id) tuples would.
    member = max((float(margin[i]), float(score[i]), candidates[i].interaction_id)
                  for i in np.flatnonzero(index == g).tolist())
    groups = [group] + [name for m, name, _ in joined[1:] if m >= limits.merge - limits.join]
    keep = min(groups)
    return Decision(group_id=keep, merged=sorted(x for x in groups if x != keep), matched=member[2],
                    similarity=member[1])


class _Pairs(NamedTuple):
    """Per candidate: similarity, the threshold it must clear, agreement, word cosine, dot product of the
    embeddings (0 where not compared so), and whether it counts in its group's word centroid."""

    score: npt.NDArray[np.float64]
    needed: npt.NDArray[np.float64]
    agreed: npt.NDArray[np.float64]
    words_dot: npt.NDArray[np.float64]
    emb_dot: npt.NDArray[np.float64]
    centroid: npt.NDArray[np.bool_]


class _Window:
    """A new signature against its candidates, every pair at once: the TF-IDF cosines (words alone, words and
    logs) as sparse dot products over term ids, the embedding cosines as one matrix product, and the
    agreement factors, all as `similarity` and `agreement` define them pair by pair."""

    def __init__(self, sig: Signature, candidates: Sequence[Candidate], idf: Idf) -> None:
        self.sig = sig
        self.prepared = [_prepare(c.signature) for c in candidates]
        self.new = _prepare(sig)
        self.idf = idf
        self.size = len(candidates)
        model, dimensions = (sig.embedding_model, len(sig.embedding)) if sig.embedding else ("", 0)
        same = np.fromiter((p.model == model and p.dimensions == dimensions for p in self.prepared), dtype=bool,
                           count=self.size) if model else np.zeros(self.size, dtype=bool)
        local = model == local_embedding.MODEL
        self.by_embedding = same & (not local)
        self.mixed = same & local
        self.with_embedding = np.flatnonzero(self.by_embedding | self.mixed)
        self.vectors = np.stack([candidates[i].signature.array() for i in self.with_embedding.tolist()]) \
            if len(self.with_embedding) else np.zeros((0, 0))
        self.candidates = candidates

    def _sparse(self, which: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.intp]]:
        """Term ids, IDF-weighted values and candidate numbers of every candidate's words or full terms."""
        if which == "word":
            ids = [p.word_ids for p in self.prepared]
            weights = [p.word_weights for p in self.prepared]
        else:
            ids = [p.full_ids for p in self.prepared]
            weights = [p.full_weights for p in self.prepared]
        lengths = np.fromiter(map(len, ids), dtype=np.intp, count=self.size)
        flat = np.concatenate(ids)
        return flat, np.concatenate(weights) * self.idf.weights(flat), np.repeat(np.arange(self.size), lengths)

    def _new_unit(self, ids: npt.NDArray[np.intp],
                  weights: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """The new signature's unit vector: its term ids, sorted, and their values."""
        raw = weights * self.idf.weights(ids)
        order = np.argsort(ids)
        return ids[order], raw[order] / (math.sqrt(float(raw @ raw)) or 1.0)

    def _cosines(self, which: str,
                 new: tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        flat, values, owner = self._sparse(which)
        norms = np.sqrt(np.bincount(owner, values * values, self.size))
        norms[norms == 0] = 1.0
        if which == "word":
            self.word_terms, self.word_norms = (flat, values, owner), norms
        ids, unit = new
        if not len(ids):
            return np.zeros(self.size)
        at = np.minimum(np.searchsorted(ids, flat), len(ids) - 1)
        shared = np.where(ids[at] == flat, unit[at], 0.0)
        cosines: npt.NDArray[np.float64] = np.bincount(owner, values * shared, self.size) / norms
        return cosines

    def pairs(self, limits: Thresholds) -> _Pairs:
        """Per candidate: similarity, the threshold it must clear, agreement, word cosine, dot product of the
        embeddings (0 where not compared so), and whether it counts in its group's word centroid."""
        new = self.new
        words_dot = self._cosines("word", self._new_unit(new.word_ids, new.word_weights))
        has_logs = np.fromiter((p.has_logs for p in self.prepared), dtype=bool, count=self.size)
        if new.has_logs or has_logs.any():
            full_dot = self._cosines("full", self._new_unit(new.full_ids, new.full_weights))
            cosine = np.where(has_logs | new.has_logs, np.maximum(full_dot, words_dot), full_dot)
            if not new.has_logs:  # both without logs: the full vectors are the word vectors
                cosine = np.where(has_logs, cosine, words_dot)
        else:
            cosine = words_dot
        agreed = self._agreement()
        emb_dot = np.zeros(self.size)
        emb_cos = np.zeros(self.size)
        if len(self.with_embedding):
            a = self.sig.array()
            dots = self.vectors @ a
            norms = np.sqrt(np.einsum("ij,ij->i", self.vectors, self.vectors)) * math.sqrt(float(a @ a))
            emb_dot[self.with_embedding] = dots
            emb_cos[self.with_embedding] = np.divide(dots, norms, out=np.zeros_like(dots), where=norms != 0)
        score = np.where(self.by_embedding, emb_cos,
                         np.where(self.mixed, MIX * cosine + (1 - MIX) * emb_cos, cosine) * agreed)
        needed = np.where(self.by_embedding, limits.embedding, np.where(self.mixed, limits.mixed, limits.join))
        return _Pairs(score, needed, agreed, words_dot, emb_dot, ~self.by_embedding)

    def _agreement(self) -> npt.NDArray[np.float64]:
        """`agreement` of the new signature with every candidate."""
        factor = np.ones(self.size)
        kind = self.sig.kind
        if kind:
            for i, p in enumerate(self.prepared):
                other = p.kind
                if other and other != kind:
                    factor[i] *= PRAISE_AND_OTHER if "praise" in (kind, other) else OTHER_KIND
        if self.new.symptoms:
            bits = np.fromiter((p.symptoms for p in self.prepared), dtype=np.int64, count=self.size)
            factor[(bits != 0) & (bits & self.new.symptoms == 0)] *= OTHER_SYMPTOMS
        if self.new.evidence:
            evidence = self.new.evidence
            for i, p in enumerate(self.prepared):
                if p.evidence and not p.evidence & evidence:
                    factor[i] *= OTHER_LOGS
        return factor

    def centroid_norms(self, members: npt.NDArray[np.intp], index: npt.NDArray[np.intp],
                       groups: int) -> npt.NDArray[np.float64]:
        """Length of the sum of the unit word vectors of `members`, per group (1 where there is none)."""
        flat, values, owner = self.word_terms
        keep = np.isin(owner, members)
        unit = values[keep] / self.word_norms[owner[keep]]
        base = int(flat.max()) + 1 if len(flat) else 1
        keys = index[owner[keep]] * base + flat[keep]
        unique, inverse = np.unique(keys, return_inverse=True)
        sums = np.bincount(inverse, unit, len(unique))
        norms = np.sqrt(np.bincount(unique // base, sums * sums, groups))
        norms[norms == 0] = 1.0
        return norms

    def centroid_embedding_cosines(self, members: npt.NDArray[np.intp], index: npt.NDArray[np.intp], groups: int,
                                   emb_dot: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Cosine of the new embedding with the sum of the embeddings of `members`, per group (0 for none)."""
        out = np.zeros(groups)
        if not len(members):
            return out
        members = members[np.argsort(index[members], kind="stable")]
        rows = np.searchsorted(self.with_embedding, members)
        owners = index[members]
        first = np.r_[True, np.diff(owners) != 0]
        position = np.arange(len(members)) - np.flatnonzero(first)[np.cumsum(first) - 1]
        sums = np.zeros((groups, self.vectors.shape[1]))
        for k in range(int(position.max()) + 1):  # the k-th member of every group at once, in candidate order
            at = position == k
            sums[owners[at]] += self.vectors[rows[at]]
        a = self.sig.array()
        norms = np.sqrt(np.einsum("ij,ij->i", sums, sums)) * math.sqrt(float(a @ a))
        dots = np.bincount(index[members], emb_dot[members], groups)
        cosines: npt.NDArray[np.float64] = np.divide(dots, norms, out=out, where=norms != 0)
        return cosines
