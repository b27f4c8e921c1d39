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

A worker compares each new report with about a thousand earlier ones, so a decision scores them all at
once: each signature's terms become integer ids and weights once (`_prepare`, kept with the signature and,
across reports, in the worker's `SignatureCache`), the TF-IDF cosines are sparse dot products in numpy and
the embedding cosines one matrix product (`Window`). Consecutive reports of a project share all but a few
of those candidates, so the worker keeps each project's `Window` between reports and applies only the
difference (`Window.sync`); `decide` builds one from scratch. `Vector`, `similarity` and `agreement` define
the same scores pair by pair; unit tests hold the pairwise definitions, a window built from scratch and
one kept over a long stream of reports to the same decisions.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from cell.enrichment import embedding as local_embedding
from cell.enrichment.text import SYMPTOMS, Document, cues, sublinear, tokens

METHOD = "local-v6"
"""Version of the method (terms, embedding, cut): signatures of another version are not compared with these;
`ai_method.grouping` names it on every interaction."""
AUTO_PRECISION = 0.95
"""The pairwise precision the automatic cut (`MIXED_THRESHOLD`) is calibrated for, on the labelled tuning
parts (bench/enrichment.py): below it the workers only suggest (`GET …/similar`), a person decides."""

THRESHOLD = 0.35
"""Word similarity from which a new interaction joins a group (chosen on the benchmark's dev, test and
holdout2 reports)."""
MIXED_THRESHOLD = 0.51
"""Mixed similarity (words and local embedding, see `MIX`) from which a worker joins a new interaction to a
group on its own: the automatic cut, calibrated by bench/enrichment.py on the tuning parts (dev, test,
holdout2, holdout3, holdout7) interleaved for pairwise precision ≥ `AUTO_PRECISION` (local-v6, with
`EMBEDDING_FLOOR`: 0.951 at 0.51, recall 0.633; 0.940 at 0.50. local-v5 on the first four: 0.958 at 0.52;
local-v4 joined from 0.45, 0.93 there). Below it the workers only suggest (`GET …/similar`)."""
MIX = 0.5
"""Weight of the word cosine in the mixed similarity; the local embedding's cosine has the rest."""
MERGE_THRESHOLD = 0.42
"""Similarity to a member of a second group from which the two groups are merged."""
EMBEDDING_THRESHOLD = 0.85
"""Default cosine similarity of provider embeddings from which two interactions are duplicates."""
EMBEDDING_FLOOR = 0.55
"""The local embedding's own cosine a pair needs before its mixed similarity may join it on its own
(local-v6): words alone can lift the mix over the cut where they share one rare, incidental word ("a
message scheduled for 8 went out at 9, the picker and my clock agree" against "messages with a little clock
next to them never go through": mixed over 0.52, the model's cosine 0.517). Chosen on the tuning parts with
holdout7, whose one wrong pair that was: the highest of 0.50 / 0.55 / 0.60 that costs no more recall than
0.50 (dev, test, holdout2 and holdout3 at the cut 0.52: precision 0.962 → 0.961, recall 0.695 → 0.689; at
0.60 recall 0.663). A member below it also keeps the new interaction out of its group unless the group's
centroid carries it."""

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
    floor: float = EMBEDDING_FLOOR
    """The local embedding's cosine a pair compared by words and embedding needs at least."""


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
    embedding cosine, damped by their disagreements (`agreement`), when both have a local embedding (never
    enough when that cosine is under `Thresholds.floor`: the threshold is then infinite); else
    the TF-IDF cosine alone, damped likewise."""
    a, b = new.sig, old.sig
    if by_embedding(a, b):
        return embedding_cosine(a.embedding or [], b.embedding or []), limits.embedding
    if mixed(a, b):
        model = _cosine(a.array(), b.array())
        both = MIX * new.cosine(old) + (1 - MIX) * model
        return both * agreement(new, old), limits.mixed if model >= limits.floor else math.inf
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
    """Choose the group of a new interaction among the earlier ones, built from scratch (see `Window.decide`,
    which a worker keeps between reports instead)."""
    return Window.of(candidates).decide(interaction_id, sig, limits, idf)


_Key = TypeVar("_Key", bound=Hashable)

_SCRATCH = np.zeros(0)
"""Zeros by term id, shared by every window: a decision puts the new signature's values in, reads them at the
candidates' term ids and takes them out again (decisions never interleave inside one call)."""

_TRASH = 0
"""The slot that owns the terms of rows removed from a window (no row lives in it)."""
_Rows = tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64]]
"""Term ids, owning slots, IDF-weighted values and per-slot norms of a window's terms (`Window._rows`)."""


class _Terms:
    """Every row's term ids and raw weights, concatenated (rows appended as they come; a removed row's entries
    are handed to `_TRASH` until the next compaction), with each row's place in them."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.intp)
        self.weights = np.zeros(0, dtype=np.float64)
        self.owner = np.zeros(0, dtype=np.intp)
        self.size = 0
        self.dead = 0

    def append(self, slots: list[int], ids: list[npt.NDArray[np.intp]], weights: list[npt.NDArray[np.float64]],
               start: npt.NDArray[np.intp], length: npt.NDArray[np.intp]) -> None:
        if len(slots) == 1:  # one report on: no concatenation
            slot, row, size = slots[0], ids[0], len(ids[0])
            end = self.size + size
            if end > len(self.ids):
                self._grow(end)
            self.ids[self.size:end] = row
            self.weights[self.size:end] = weights[0]
            self.owner[self.size:end] = slot
            start[slot], length[slot] = self.size, size
            self.size = end
            return
        lengths = np.fromiter(map(len, ids), dtype=np.intp, count=len(ids))
        total = int(lengths.sum())
        end = self.size + total
        if end > len(self.ids):
            self._grow(end)
        if total:
            self.ids[self.size:end] = np.concatenate(ids)
            self.weights[self.size:end] = np.concatenate(weights)
            self.owner[self.size:end] = np.repeat(np.asarray(slots, dtype=np.intp), lengths)
        at = np.asarray(slots, dtype=np.intp)
        start[at] = self.size + np.cumsum(lengths) - lengths
        length[at] = lengths
        self.size = end

    def _grow(self, end: int) -> None:
        grown = max(end, 2 * len(self.ids), 1024)
        for name in ("ids", "weights", "owner"):
            old = getattr(self, name)
            new = np.zeros(grown, dtype=old.dtype)
            new[:self.size] = old[:self.size]
            setattr(self, name, new)

    def remove(self, slot: int, start: npt.NDArray[np.intp], length: npt.NDArray[np.intp]) -> None:
        self.owner[start[slot]:start[slot] + length[slot]] = _TRASH
        self.dead += int(length[slot])
        length[slot] = 0


class Window:
    """A project's candidates kept by a worker between reports, so that a decision reads each candidate's
    terms, kind, symptoms, evidence and embedding from arrays made once instead of preparing, stacking and
    concatenating a thousand signatures for every report: consecutive reports of a project share all but a
    few of their candidates (`sync` applies the difference: rows added and removed, groups renamed by
    merges), and the document frequencies of the counted rows (those IDF is taken from) are kept the same
    way, adding a new row's term ids and subtracting an evicted row's.

    A decision scores every candidate at once as `similarity` and `agreement` define it pair by pair (the
    TF-IDF cosines as sparse dot products over term ids, the embedding cosines as one matrix product), then
    works on the candidates in their given order, so that sums over a group add up as a window built from
    scratch (`Window.of`) adds them. Rows live in slots (a removed row's slot is reused); slot 0 owns the
    entries of removed rows until they are compacted away."""

    def __init__(self) -> None:
        self.keys: list[Hashable] = []
        """The candidates' keys in their order (as the last `sync` gave them, missing ones left out)."""
        self.groups: list[str] = []
        self.counted = 0
        """The first `counted` candidates are the documents IDF is taken from (with the new signature)."""
        self._reset()

    def _reset(self, capacity: int = 64) -> None:
        self.generation = _VOCABULARY.generation
        self.slot_of: dict[Hashable, int] = {}
        self.rows: list[Candidate | None] = [None] * capacity
        self.free = list(range(capacity - 1, 0, -1))
        self.high = 1
        """One past the highest slot in use."""
        self.order = np.zeros(0, dtype=np.intp)
        """Slot of each candidate, in the candidates' order."""
        self.kinds = np.zeros(capacity, dtype=np.int8)
        self.symptoms = np.zeros(capacity, dtype=np.int64)
        self.has_logs = np.zeros(capacity, dtype=bool)
        self.has_evidence = np.zeros(capacity, dtype=bool)
        self.models = np.full(capacity, -1, dtype=np.intp)
        self.vector_norms = np.zeros(capacity)
        self.is_counted = np.zeros(capacity, dtype=bool)
        self.group_codes = np.zeros(capacity, dtype=np.intp)
        self.starts = {name: np.zeros(capacity, dtype=np.intp) for name in ("word", "full", "evidence")}
        self.lengths = {name: np.zeros(capacity, dtype=np.intp) for name in ("word", "full", "evidence")}
        self.terms = {name: _Terms() for name in ("word", "full", "evidence")}
        self.vectors: dict[int, npt.NDArray[np.float64]] = {}
        """Embedding rows by dimensions (a slot's row is zero unless its embedding has that many)."""
        self.model_codes: dict[tuple[str, int], int] = {}
        self.kind_codes: dict[str, int] = {"": 0}
        self.evidence_codes: dict[str, int] = {}
        self.group_names: list[str] = []
        self.group_code_of: dict[str, int] = {}
        self.negative = False
        """Whether a row has a negative term weight (no signature made here has)."""
        self.df = np.zeros(max(len(_VOCABULARY.ids), 1024), dtype=np.intp)
        self.idf = np.zeros(len(self.df))
        """The inverse document frequency of every term id for `idf_n` documents (kept term by term as
        `df` changes; all again when the number of documents does)."""
        self.idf_n = -1
        self.decided = -1
        """The number of documents of the last decision (a window still filling up changes it every time)."""

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> Window:
        """A window built from scratch over these candidates (none counted: the caller gives the IDF)."""
        window = cls()
        window.sync(list(range(len(candidates))), [c.group_id for c in candidates], dict(enumerate(candidates)), 0)
        return window

    def missing(self, keys: Sequence[_Key]) -> list[_Key]:
        """The keys whose candidates this window does not hold (the caller reads them for `sync`): when the
        keys are the ones it holds in its order, with new ones before and after (one report on from its last
        decision), only those are looked at."""
        held = self.slot_of
        keys = list(keys)
        if self.keys:
            try:
                front = keys.index(self.keys[0])  # type: ignore[arg-type]  # any key compares
            except ValueError:
                front = -1
            middle = min(len(keys) - front, len(self.keys))
            if front >= 0 and keys[front:front + middle] == self.keys[:middle]:
                return [k for k in keys[:front] + keys[front + middle:] if k not in held]
        return [k for k in keys if k not in held]

    def sync(self, keys: Sequence[Hashable], groups: Sequence[str], found: Mapping[Any, Candidate],
             counted: int) -> None:
        """Make the candidates these keys in this order, with these groups: rows it holds are kept, the others
        taken from `found` (their id and signature; the group is the one in `groups`; keys in neither are
        left out, as an erased signature is), rows no longer wanted dropped. The first `counted` keys are
        counted in the document frequencies. A worker calls it under the project's lock, before deciding: it
        starts a decision, so the vocabulary is renewed here when full (as `Idf` does)."""
        _VOCABULARY.renew_if_full()
        if self.generation != _VOCABULARY.generation:  # term ids renewed: look every row's terms up again
            self._renew()
        keys, groups = list(keys), list(groups)
        if keys == self.keys and groups == self.groups and counted == self.counted:
            return
        if not self._shift(keys, groups, found, counted):
            self._sync(keys, groups, found, counted)
        if self.terms["word"].dead > max(self.terms["word"].size // 2, 4096):
            self._compact()

    def _shift(self, keys: list[Hashable], groups: list[str], found: Mapping[Any, Candidate], counted: int) -> bool:
        """`sync` when the keys are rows it holds, in the order it holds them, between new rows at the front and
        new rows at the end (the project's newer reports, older ones sharing a rare term), groups unchanged
        (no merge renamed them): False when they are not."""
        held = self.keys
        if not held:
            return False
        try:
            front = keys.index(held[0])
        except ValueError:
            return False
        middle = min(len(keys) - front, len(held))
        if keys[front:front + middle] != held[:middle] or groups[front:front + middle] != self.groups[:middle]:
            return False
        added = keys[:front] + keys[front + middle:]
        if any(k in self.slot_of or k not in found for k in added):
            return False
        for key in held[middle:]:
            self._remove(key)
        if added:
            self._add([(k, found[k]) for k in added])
        slot_of = self.slot_of
        self.order = np.concatenate([np.fromiter((slot_of[k] for k in keys[:front]), dtype=np.intp, count=front),
                                     self.order[:middle],
                                     np.fromiter((slot_of[k] for k in keys[front + middle:]), dtype=np.intp,
                                                 count=len(keys) - front - middle)])
        self.keys, self.groups = keys, groups
        counted = min(counted, len(keys))
        if counted == len(keys) and self.counted == len(held):  # all counted before and now: only the new rows
            for slot in self.order[:front].tolist() + self.order[front + middle:].tolist():
                self._frequencies(slot, +1)
                self.is_counted[slot] = True
            self.counted = counted
        else:
            self._count(counted)
        if len(self.group_code_of) > 4 * len(groups) + 64:
            self._name_groups(groups)
        else:
            fresh = list(range(front)) + list(range(front + middle, len(keys)))
            self._name_groups([groups[i] for i in fresh], self.order[fresh])
        return True

    def _sync(self, keys: list[Hashable], groups: list[str], found: Mapping[Any, Candidate], counted: int) -> None:
        slot_of = self.slot_of
        kept: list[Hashable] = []
        kept_groups: list[str] = []
        added: list[tuple[Hashable, Candidate]] = []
        for key, group in zip(keys, groups, strict=True):
            if key in slot_of:
                kept.append(key)
                kept_groups.append(group)
            elif (cand := found.get(key)) is not None:
                kept.append(key)
                kept_groups.append(group)
                added.append((key, cand))
        wanted = set(kept)
        for key in [k for k in slot_of if k not in wanted]:
            self._remove(key)
        if added:
            self._add(added)
        self.keys, self.groups = kept, kept_groups
        self.order = np.fromiter((slot_of[k] for k in kept), dtype=np.intp, count=len(kept))
        counted = min(counted, len(kept)) if len(kept) == len(keys) else \
            sum(1 for k in keys[:counted] if k in wanted)
        self._count(counted)
        self._name_groups(kept_groups)

    def _add(self, added: list[tuple[Hashable, Candidate]]) -> None:
        need = len(added) - len(self.free)
        if need > 0:
            self._grow(len(self.rows) + max(need, len(self.rows) // 2))
        slots = [self.free.pop() for _ in added]
        prepared = [_prepare(c.signature) for _, c in added]
        for slot, (key, cand) in zip(slots, added, strict=True):
            self.slot_of[key] = slot
            sig = cand.signature  # kept without its embedding (the window has it): terms to look up again
            self.rows[slot] = Candidate(cand.interaction_id, "", Signature(sig.terms, sig.log_terms, kind=sig.kind))
        self.high = max(self.high, max(slots) + 1)
        at = np.asarray(slots, dtype=np.intp)
        kind_codes = self.kind_codes
        self.kinds[at] = [kind_codes.setdefault(p.kind, len(kind_codes)) for p in prepared]
        self.symptoms[at] = [p.symptoms for p in prepared]
        self.has_logs[at] = [p.has_logs for p in prepared]
        self.has_evidence[at] = [bool(p.evidence) for p in prepared]
        self.is_counted[at] = False
        self.negative = self.negative or any(bool((p.full_weights < 0).any()) for p in prepared)
        self._append_terms(slots, prepared)
        codes = self.evidence_codes
        evidence = [np.fromiter((codes.setdefault(e, len(codes)) for e in sorted(p.evidence)), dtype=np.intp)
                    for p in prepared]
        self.terms["evidence"].append(slots, evidence, [np.zeros(len(e)) for e in evidence],
                                      self.starts["evidence"], self.lengths["evidence"])
        for slot, p, (_, cand) in zip(slots, prepared, added, strict=True):
            if p.model:
                self.models[slot] = self.model_codes.setdefault((p.model, p.dimensions), len(self.model_codes))
                matrix = self.vectors.get(p.dimensions)
                if matrix is None:
                    matrix = self.vectors[p.dimensions] = np.zeros((len(self.rows), p.dimensions))
                row = cand.signature.array()
                matrix[slot] = row
                self.vector_norms[slot] = np.sqrt(np.einsum("ij,ij->i", row[None], row[None]))[0]
            else:
                self.models[slot] = -1

    def _append_terms(self, slots: list[int], prepared: list[_Prepared]) -> None:
        """The rows' word terms, and the full terms of those with logs (a row without has its words)."""
        nothing = (np.zeros(0, dtype=np.intp), np.zeros(0))
        for name, ids, weights in (
                ("word", [p.word_ids for p in prepared], [p.word_weights for p in prepared]),
                ("full", [p.full_ids if p.has_logs else nothing[0] for p in prepared],
                 [p.full_weights if p.has_logs else nothing[1] for p in prepared])):
            self.terms[name].append(slots, ids, weights, self.starts[name], self.lengths[name])
        top = max((int(p.full_ids.max()) for p in prepared if len(p.full_ids)), default=0) + 1
        if top > len(self.df):
            self._widen(top)

    def _renew(self) -> None:
        """After the vocabulary renewed its term ids: every row's terms looked up again, in the candidates'
        order, and counted again (kinds, symptoms, evidence and embeddings do not depend on term ids)."""
        self.generation = _VOCABULARY.generation
        slots = self.order.tolist()
        prepared = []
        for slot in slots:
            row = self.rows[slot]
            assert row is not None
            prepared.append(_prepare(row.signature))
        for name in ("word", "full"):
            self.terms[name] = _Terms()
            self.starts[name][:] = 0
            self.lengths[name][:] = 0
        self.df = np.zeros(max(len(_VOCABULARY.ids), 1024), dtype=np.intp)
        self.idf, self.idf_n = np.zeros(len(self.df)), -1
        if slots:
            self._append_terms(slots, prepared)
        for slot in slots:
            if self.is_counted[slot]:
                self._frequencies(slot, +1)

    def _remove(self, key: Hashable) -> None:
        slot = self.slot_of.pop(key)
        if self.is_counted[slot]:
            self._frequencies(slot, -1)
            self.is_counted[slot] = False
        for name, terms in self.terms.items():
            terms.remove(slot, self.starts[name], self.lengths[name])
        self.rows[slot] = None
        self.models[slot] = -1
        self.free.append(slot)

    def _grow(self, capacity: int) -> None:
        old = len(self.rows)
        self.rows += [None] * (capacity - old)
        self.free = list(range(capacity - 1, old - 1, -1)) + self.free
        for name in ("kinds", "symptoms", "has_logs", "has_evidence", "models", "vector_norms", "is_counted",
                     "group_codes"):
            array = getattr(self, name)
            grown = np.full(capacity, -1 if name == "models" else 0, dtype=array.dtype)
            grown[:old] = array
            setattr(self, name, grown)
        for table in (self.starts, self.lengths):
            for name, array in table.items():
                table[name] = np.r_[array, np.zeros(capacity - old, dtype=array.dtype)]
        for dims, matrix in self.vectors.items():
            self.vectors[dims] = np.r_[matrix, np.zeros((capacity - old, dims))]

    def _frequencies(self, slot: int, change: int) -> None:
        name = "full" if self.has_logs[slot] else "word"  # a row without logs has only its words
        start, length = self.starts[name][slot], self.lengths[name][slot]
        ids = self.terms[name].ids[start:start + length]  # distinct within a row
        if len(ids) and int(ids.max()) >= len(self.df):
            self._widen(int(ids.max()) + 1)
        self.df[ids] += change
        self._refresh(ids)

    def _refresh(self, ids: npt.NDArray[np.intp]) -> None:
        """Recompute the inverse document frequencies of these term ids after their counts changed."""
        if self.idf_n >= 0:
            self.idf[ids] = np.log(self.idf_n / (self.df[ids] + 1.0)) + 1.0

    def _widen(self, size: int) -> None:
        size = max(size, 2 * len(self.df))
        self.df = np.concatenate([self.df, np.zeros(size - len(self.df), dtype=np.intp)])
        self.idf, self.idf_n = np.zeros(size), -1

    def _count(self, counted: int) -> None:
        """Count the first `counted` candidates in the document frequencies, and no others."""
        want = np.zeros(self.high, dtype=bool)
        want[self.order[:counted]] = True
        have = self.is_counted[:self.high]
        for slot in np.flatnonzero(want & ~have).tolist():
            self._frequencies(slot, +1)
        for slot in np.flatnonzero(have & ~want).tolist():
            self._frequencies(slot, -1)
        self.is_counted[:self.high] = want
        self.counted = counted

    def _name_groups(self, groups: list[str], slots: npt.NDArray[np.intp] | None = None) -> None:
        """Code the groups of the rows in `slots` (every candidate when None: then unused names are dropped
        first if they have piled up)."""
        if slots is None:
            slots = self.order
            if len(self.group_code_of) > 4 * len(groups) + 64:
                self.group_names, self.group_code_of = [], {}
        code_of, names = self.group_code_of, self.group_names
        codes = []
        for name in groups:
            code = code_of.get(name)
            if code is None:
                code = code_of[name] = len(names)
                names.append(name)
            codes.append(code)
        self.group_codes[slots] = codes

    def _compact(self) -> None:
        """Rebuild the concatenated terms in the candidates' order, without removed rows' entries."""
        live = [int(s) for s in self.order]
        listed = set(live)
        live += [s for s in range(1, self.high) if self.rows[s] is not None and s not in listed]
        for name, terms in self.terms.items():
            starts, lengths = self.starts[name], self.lengths[name]
            pieces = [(terms.ids[starts[s]:starts[s] + lengths[s]], terms.weights[starts[s]:starts[s] + lengths[s]])
                      for s in live]
            self.terms[name] = fresh = _Terms()
            fresh.append(live, [p[0] for p in pieces], [p[1] for p in pieces], starts, lengths)

    def top(self, sig: Signature, k: int = MAX_KEYS) -> list[str]:
        """`Idf.top` over the counted candidates and `sig`: its k terms that weigh most here."""
        _prepare(sig)
        n = self.counted + 1
        terms = sig.all_terms()
        ids = _VOCABULARY.ids
        df = self.df

        def weight(term: str) -> float:
            found = ids.get(term)
            count = int(df[found]) if found is not None and found < len(df) else 0
            return math.log((n + 1) / (count + 1 + 1)) + 1.0  # + 1: `sig` itself has the term

        return sorted(terms, key=lambda t: (-terms[t] * weight(t), t))[:k]

    def decide(self, interaction_id: str, sig: Signature, limits: Thresholds | None = None,
               idf: Idf | None = None) -> Decision:
        """Choose the group of a new interaction among the window's candidates; IDF is `idf`, or else the
        window's counted candidates and `sig`.

        A group's score is the mean of its closest member's similarity and of how close the group is as a
        whole (each as a margin over the threshold that pair must clear). The closest member alone would
        chain: one report loosely like one member of a group would join, and the next report loosely like
        it would follow, until unrelated problems share a group. The group as a whole is the better of the
        average similarity of its members and the similarity to their centroid (the sum of their word
        vectors, damped by the members' mean `agreement`): the centroid holds every wording the group has
        seen, so a new report that says one thing like one member and another like a second still finds it,
        while a report that shares a single word with a single member stays weak against it. When every such
        member is compared with the new report by words and local embedding (`mixed`), the centroid is mixed
        alike: the word centroid's cosine and the cosine to the sum of their embeddings, weighed by `MIX`.
        A group that could not be joined even if its centroid were as close as its members' word cosines
        allow (a centroid of unit vectors with no negative weight is at least 1 long) skips the centroid.
        """
        limits = limits or Thresholds()
        if not sig.terms and not sig.log_terms and not sig.embedding:
            return Decision(group_id=interaction_id)  # nothing to compare: a group of its own
        if not self.keys:
            return Decision(group_id=interaction_id)
        if self.generation != _VOCABULARY.generation:  # renewed by another decision meanwhile
            self.sync(self.keys, self.groups, {}, self.counted)
        new = _prepare(sig)
        if len(new.full_ids) and int(new.full_ids.max()) >= len(self.df):
            self._widen(int(new.full_ids.max()) + 1)
        if idf is None:
            n = self.counted + 1 + 1
            if self.idf_n != n and self.decided == n:  # the same number of documents twice: keep their IDF
                self.idf, self.idf_n = np.log(n / (self.df + 1.0)) + 1.0, n
            self.decided = n
            self.df[new.full_ids] += 1  # the new signature counts too, for this decision
            self._refresh(new.full_ids)
            try:
                pairs = self._pairs(sig, new, limits, None)
            finally:
                self.df[new.full_ids] -= 1
                self._refresh(new.full_ids)
        else:
            pairs = self._pairs(sig, new, limits, idf)
        return self._choose(interaction_id, sig, pairs, limits)

    def _weights(self, ids: npt.NDArray[np.intp], idf: Idf | None) -> npt.NDArray[np.float64]:
        if idf is not None:
            return idf.weights(ids)
        n = self.counted + 1 + 1  # as `Idf.weights` over the counted rows and the new signature
        if self.idf_n == n:
            kept: npt.NDArray[np.float64] = self.idf[ids]
            return kept
        weights: npt.NDArray[np.float64] = np.log(n / (self.df[ids] + 1.0)) + 1.0
        return weights

    def _rows(self, name: str, idf: Idf | None) -> _Rows:
        """The `name` terms of every row: term ids, owning slots, IDF-weighted values (entry by entry) and each
        slot's norm (1 where it has none)."""
        terms = self.terms[name]
        flat, owner = terms.ids[:terms.size], terms.owner[:terms.size]
        values = terms.weights[:terms.size] * self._weights(flat, idf)
        norms = np.sqrt(np.bincount(owner, values * values, self.high))
        norms[norms == 0] = 1.0
        return flat, owner, values, norms

    def _cosines(self, rows: _Rows, ids: npt.NDArray[np.intp], weights: npt.NDArray[np.float64],
                 idf: Idf | None) -> npt.NDArray[np.float64]:
        """Per slot: the cosine of the new signature's terms (`ids`, raw `weights`) with the row's (`_rows`)."""
        flat, owner, values, norms = rows
        if not len(ids):
            return np.zeros(self.high)
        raw = weights * self._weights(ids, idf)
        unit = raw / (math.sqrt(float(raw @ raw)) or 1.0)
        global _SCRATCH
        if len(_SCRATCH) < len(self.df):  # the window's df covers every id of its rows and the new signature
            _SCRATCH = np.zeros(len(self.df))
        scratch = _SCRATCH
        scratch[ids] = unit
        shared = scratch[flat]
        scratch[ids] = 0.0
        cosines: npt.NDArray[np.float64] = np.bincount(owner, values * shared, self.high) / norms
        return cosines

    def _pairs(self, sig: Signature, new: _Prepared, limits: Thresholds, idf: Idf | None) -> _Pairs:
        """Per candidate, in the candidates' order: as `_Pairs` says. The word terms of every row and the full
        terms of the rows with logs are kept apart: a row without logs has its words as full terms."""
        high = self.high
        words = self._rows("word", idf)
        words_dot = self._cosines(words, new.word_ids, new.word_weights, idf)
        self.word_values, self.word_norms = words[2], words[3]
        has_logs = self.has_logs[:high]
        if new.has_logs or has_logs[self.order].any():
            full_dot = self._cosines(self._rows("full", idf), new.full_ids, new.full_weights, idf)
            if new.has_logs:
                full_dot = np.where(has_logs, full_dot, self._cosines(words, new.full_ids, new.full_weights, idf))
            cosine = np.where(has_logs | new.has_logs, np.maximum(full_dot, words_dot), full_dot)
            if not new.has_logs:  # both without logs: the full vectors are the word vectors
                cosine = np.where(has_logs, cosine, words_dot)
        else:
            cosine = words_dot
        agreed = self._agreement(new)
        emb_dot = np.zeros(high)
        emb_cos = np.zeros(high)
        code = self.model_codes.get((new.model, new.dimensions), -2) if new.model else -2
        same = self.models[:high] == code
        local = new.model == local_embedding.MODEL
        by_embedding = same & (not local)
        mixed = same & local
        if same.any():
            a = sig.array()
            dots = self.vectors[new.dimensions][:high] @ a
            norms = self.vector_norms[:high] * math.sqrt(float(a @ a))
            emb_dot[same] = dots[same]
            emb_cos[same] = np.divide(dots[same], norms[same], out=np.zeros(int(same.sum())),
                                      where=norms[same] != 0)
        score = np.where(by_embedding, emb_cos, np.where(mixed, MIX * cosine + (1 - MIX) * emb_cos, cosine) * agreed)
        needed = np.where(by_embedding, limits.embedding, np.where(mixed, limits.mixed, limits.join))
        needed[mixed & (emb_cos < limits.floor)] = np.inf  # the model does not agree: words alone do not join
        order = self.order
        return _Pairs(score[order], needed[order], agreed[order], words_dot[order], emb_dot[order],
                      ~by_embedding[order], mixed[order])

    def _agreement(self, new: _Prepared) -> npt.NDArray[np.float64]:
        """`agreement` of the new signature with every slot's row (factors applied in its order)."""
        high = self.high
        factor = np.ones(high)
        if new.kind:
            other = self.kinds[:high]
            code = self.kind_codes.get(new.kind, -1)
            praise = self.kind_codes.get("praise", -1)
            differ = (other != 0) & (other != code)
            either = np.full(high, True) if new.kind == "praise" else other == praise
            factor = np.where(differ, np.where(either, PRAISE_AND_OTHER, OTHER_KIND), 1.0)
        if new.symptoms:
            bits = self.symptoms[:high]
            factor[(bits != 0) & (bits & new.symptoms == 0)] *= OTHER_SYMPTOMS
        if new.evidence:
            terms = self.terms["evidence"]
            codes = [c for e in new.evidence if (c := self.evidence_codes.get(e)) is not None]
            owner = terms.owner[:terms.size]
            hit = np.isin(terms.ids[:terms.size], np.asarray(codes, dtype=np.intp))
            common = np.bincount(owner[hit], minlength=high)[:high] > 0
            factor[self.has_evidence[:high] & ~common] *= OTHER_LOGS
        return factor

    def _choose(self, interaction_id: str, sig: Signature, pairs: _Pairs, limits: Thresholds) -> Decision:
        score, needed, agreed, words_dot, emb_dot, centroid, mixed = pairs
        margin = score - needed
        closest = max(0.0, float(score.max()))
        # Per group: its closest member's margin, the mean margin of its members, and the centroid of its
        # members compared by words (with their agreement, count, and the sum of their local embeddings when
        # every one of them is compared by words and embedding alike).
        listed = self.group_codes[self.order]
        present = np.zeros(len(self.group_names), dtype=bool)
        present[listed] = True
        codes = np.flatnonzero(present)  # the groups the candidates have, numbered in the order of their codes
        index = (np.cumsum(present) - 1)[listed]
        n = len(codes)
        best = np.full(n, -np.inf)
        np.maximum.at(best, index, margin)
        whole = np.bincount(index, margin, n) / np.bincount(index, minlength=n)
        count = np.bincount(index, centroid.astype(np.float64), n)
        if (count > 1).any():
            members = np.flatnonzero(centroid & (count[index] > 1))
            agree = np.bincount(index[members], agreed[members], n)
            mixed_members = members[mixed[members]]
            all_mixed = np.bincount(index[mixed_members], minlength=n) == count
            # What the centroid could give at most (words ≤ the sum of the members' word cosines, the
            # embeddings' cosine ≤ 1), with room for rounding: only groups it could carry to a join need it.
            words_most = np.maximum(np.bincount(index[members], words_dot[members], n), 0) * (1 + 1e-9) + 1e-12
            share = agree / np.maximum(count, 1)
            most = np.where(all_mixed, (MIX * words_most + (1 - MIX) * (1 + 1e-9)) * share - limits.mixed,
                            words_most * share - limits.join)
            possible = (best + np.maximum(whole, most) >= -1e-9) | self.negative  # else a centroid may be shorter
            several = np.flatnonzero((count > 1) & possible)
            if len(several):
                wanted = np.zeros(n, dtype=bool)
                wanted[several] = True
                members = members[wanted[index[members]]]
                norm = self._centroid_norms(members, index, n)
                words = np.bincount(index[members], words_dot[members], n) / norm
                mixed_members = members[mixed[members]]
                emb = self._centroid_embedding_cosines(sig, mixed_members, index, n, emb_dot)
                centre = np.where(all_mixed,
                                  (MIX * words + (1 - MIX) * emb) * agree / np.maximum(count, 1) - limits.mixed,
                                  words * agree / np.maximum(count, 1) - limits.join)
                whole[several] = np.maximum(whole[several], centre[several])
        overall = (best + whole) / 2
        names = self.group_names
        joined = [(float(overall[g]), names[codes[g]], g) for g in np.flatnonzero(overall >= 0).tolist()]
        if not joined:
            return Decision(group_id=interaction_id, similarity=closest)
        joined.sort(key=lambda x: (-x[0], x[1]))
        _, group, g = joined[0]
        # Its closest member, ties broken as a comparison of (margin, similarity, id) tuples would.
        rows = self.rows
        member = max((float(margin[i]), float(score[i]), rows[self.order[i]].interaction_id)
                     for i in np.flatnonzero(index == g).tolist())
        groups = [group] + [name for m, name, _ in joined[1:] if m >= limits.merge - limits.join]
        keep = min(groups)
        return Decision(group_id=keep, merged=sorted(x for x in groups if x != keep), matched=member[2],
                        similarity=member[1])

    def _centroid_norms(self, members: npt.NDArray[np.intp], index: npt.NDArray[np.intp],
                        groups: int) -> npt.NDArray[np.float64]:
        """Length of the sum of the unit word vectors of `members` (candidate numbers), per group (1 where there
        is none), summed in the candidates' order."""
        terms = self.terms["word"]
        flat, owner = terms.ids[:terms.size], terms.owner[:terms.size]
        position = np.full(self.high, -1, dtype=np.intp)
        position[self.order[members]] = members
        at = position[owner]
        keep = np.flatnonzero(at >= 0)
        keep = keep[np.argsort(at[keep], kind="stable")]  # candidate by candidate, each row's terms in order
        unit = self.word_values[keep] / self.word_norms[owner[keep]]
        base = int(flat[keep].max()) + 1 if len(keep) else 1
        keys = index[at[keep]] * base + flat[keep]
        unique, inverse = np.unique(keys, return_inverse=True)
        sums = np.bincount(inverse, unit, len(unique))
        norms = np.sqrt(np.bincount(unique // base, sums * sums, groups))
        norms[norms == 0] = 1.0
        return norms

    def _centroid_embedding_cosines(self, sig: Signature, members: npt.NDArray[np.intp],
                                    index: npt.NDArray[np.intp], groups: int,
                                    emb_dot: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Cosine of the new embedding with the sum of the embeddings of `members`, per group (0 for none)."""
        out = np.zeros(groups)
        if not len(members):
            return out
        vectors = self.vectors[len(sig.embedding or ())]
        members = members[np.argsort(index[members], kind="stable")]
        rows = self.order[members]
        which, owners = np.unique(index[members], return_inverse=True)  # only the groups members have
        starts = np.flatnonzero(np.r_[True, np.diff(owners) != 0])
        sums = np.add.reduceat(vectors[rows], starts, axis=0)  # member by member, in candidate order
        a = sig.array()
        norms = np.sqrt(np.einsum("ij,ij->i", sums, sums)) * math.sqrt(float(a @ a))
        dots = np.bincount(owners, emb_dot[members], len(which))
        out[which] = np.divide(dots, norms, out=np.zeros(len(which)), where=norms != 0)
        return out


class _Pairs(NamedTuple):
    """Per candidate: similarity, the threshold it must clear, agreement, word cosine, dot product of the
    embeddings (0 where not compared so), whether it counts in its group's word centroid, and whether it is
    compared by words and local embedding (`mixed`)."""

    score: npt.NDArray[np.float64]
    needed: npt.NDArray[np.float64]
    agreed: npt.NDArray[np.float64]
    words_dot: npt.NDArray[np.float64]
    emb_dot: npt.NDArray[np.float64]
    centroid: npt.NDArray[np.bool_]
    mixed: npt.NDArray[np.bool_]


class Windows:
    """The windows a worker keeps, by (project, method), the least recently used dropped past `limit` (each
    holds its candidates' embeddings, ~3 MB for a thousand of 384 dimensions, their terms without their
    embeddings, and a count and an IDF per term id of the worker's vocabulary, up to ~5 MB at its bound)."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self.entries: OrderedDict[Hashable, Window] = OrderedDict()

    def get(self, key: Hashable) -> Window:
        """The window of this key, made empty when there is none."""
        found = self.entries.get(key)
        if found is None:
            found = self.entries[key] = Window()
        self.entries.move_to_end(key)
        while len(self.entries) > self.limit:
            self.entries.popitem(last=False)
        return found

    def drop(self, key: Hashable) -> None:
        """Forget the window of this key: a decision that failed or was cancelled half-way may have left it
        between two states, and the next one builds it again from the database."""
        self.entries.pop(key, None)
