"""bench/enrichment: quality of duplicate grouping on a labelled set of reports.

`bench/data/enrichment/reports.jsonl` holds hand-written reports (bug reports with and without logs,
feedback posts, chats, survey answers), each with the id of the problem it describes. The benchmark feeds
them, in a shuffled arrival order, through the same functions the enrichment job runs with the local
provider (document → terms and the local embedding of the user's words → `grouping.decide` against every
earlier report, with merges), then scores the groups pairwise: precision
is the share of pairs put together that belong together, recall the share of pairs that belong together
that were put together.

The parts, and how each was used, so that a reader can tell which figures are held out:

- `dev` (r001…) was written first and used to develop the first method (`local-v1`): reading its
  mistakes led to the phrase and synonym lists in `cell.enrichment.text`, the linkage rule in
  `grouping.decide` and the thresholds.
- `test` (t001…) was written afterwards, with `local-v1` frozen, about other problems and near misses
  of the dev ones: held out for `local-v1` (precision 0.973, recall 0.879 on it alone). But dev and
  test interleaved gave precision 0.782: near misses from the two parts, met in one project, were
  grouped together.
- `holdout2` (h001…, 86 reports of 37 problems) was written next, before any change to `local-v1`.
  `local-v2` (kind cues and symptom words in `text`; the agreement factors and the group centroid in
  `grouping`; join threshold 0.35) was then developed by reading its mistakes on dev and test
  together, and measured once on holdout2: alone 1.000 / 0.747, but with all three parts interleaved
  precision fell to 0.761 (recall 0.859) — the same failure on new near misses.
- `holdout3` (x001…, 63 reports of 31 problems) was written next, before holdout2's mistakes were read.
  `local-v3` (wider request and question cues, symptoms in classes, "never arrives" as missing) was
  then developed by reading the mistakes on dev, test and holdout2 together. So dev, test and holdout2
  are the tuning set now (`--sweep` shows the threshold sweep on them); holdout3 is held out. Measured
  once on it: alone 1.000 / 0.647; all four parts interleaved 0.706 / 0.800 (local-v1 on the same:
  0.576 / 0.810, local-v2 0.644 / 0.820). Each method keeps its own tuning set's near misses apart
  much better than the next part's: the goal of 0.85 / 0.85 holds on dev and test (0.897 / 0.870),
  not on the whole set.
- `local-v4` adds an embedding of the user's words (all-MiniLM-L6-v2, computed in the worker,
  `cell.enrichment.embedding`) and mixes its cosine with the word cosine half and half, damped by the
  same agreement factors, join threshold 0.45 (`grouping.MIX`, `MIXED_THRESHOLD`). No text rule changed.
  The mix, its weight and the threshold were chosen by an experiment on the tuning set (dev, test and
  holdout2 interleaved) against alternatives (the embedding alone, with and without the agreement
  factors; the embedding as a gate on the word score; weights 0.3 / 0.5 / 0.7); holdout3 stayed held
  out, measured once on the chosen setting: alone 0.963 / 0.792, all four parts interleaved
  0.855 / 0.870, the first time the whole set meets the goal (tuning set 0.928 / 0.892). Holdout3's
  recall alone (0.792) stays under the goal. Holdout3 is no longer unseen for what comes after v4: a
  later method needs a new held-out part. `--words-only` runs without embeddings (what a worker without
  the model installed does: local-v4's word scoring is local-v3's).
- `holdout4` (y001…, 80 reports of 36 problems, from seven apps) was written next by someone who had not
  read the method, and measured once on local-v4: alone 1.000 / 0.344, all five parts interleaved
  0.841 / 0.826. Local-v4 keeps problems apart but finds a third of the duplicates in words it was not
  tuned on: its phrase and synonym lists and its thresholds fit the parts they were read from.
- `holdout5` (z001…, 82 reports of 37 problems, all about one calendar app, so that near misses share
  the app's words as a real project's do) was written, likewise blind, before holdout4's mistakes were
  read, and measured once on local-v4: alone 0.898 / 0.231; all six parts interleaved 0.756 / 0.762.
  Within one app, where duplicates and near misses share the app's words, the embedding alone cannot
  separate them either: over holdout5's pairs its best threshold, chosen knowing the answers, gives
  F1 0.49 (AUC 0.958; 0.997 on holdout4). On the five earlier parts interleaved, no setting of the
  kind damping (0.6 to 1.0) and the mixed join threshold (0.39 to 0.45) lifts the lower of precision and
  recall over 0.838; a Mahalanobis metric learnt from the duplicates of the earlier parts lowered the
  embedding's best F1 on both blind parts.
  The next method needs a stronger model than all-MiniLM-L6-v2 (none that ships its weights is on the
  registries this project installs from) and a new blind part to be measured on.

- `local-v5` (issue 15) changes what is asked of the method, after measurements showed that ranking
  works where a single cut fails: the workers now group on their own only above a cut calibrated on the
  tuning parts (dev, test, holdout2 and holdout3, all seen before) for pairwise precision ≥ 0.95
  (`grouping.AUTO_PRECISION`, `MIXED_THRESHOLD`), and everything else is a suggestion a person confirms:
  `GET …/similar` ranks a project's interactions by the cosine of their local embeddings, which this
  benchmark scores as top-5 recall (the share of reports with a duplicate that have one among their five
  first suggestions). Re-ranking those suggestions by the mixed word-and-embedding score was tried on
  every part: it lowered top-5 recall on holdout5 (0.897 against 0.936 for the embedding alone). Parts
  are found in the data by their `split`: any part outside `TUNING` (holdout4 to holdout7) is counted
  blind, and the cut is never calibrated on it. The embedding now runs in
  onnxruntime (float32: the same vectors as before, cosine ≥ 0.999), and the cost of enriching a report is
  measured here in CPU time of one core.
- `holdout6` (h6-001…, 93 reports) was written blind for local-v5, committed before any figure on it was
  read, and measured once on it: top-5 recall 0.939 by cosine, automatic grouping precision 1.000.
- `holdout7` (h7-001…, 93 reports of 38 problems, 13 of them with a single report) was written blind
  by a session-12 engineer who had not read the method, and committed before any figure on it was read.
  All its reports are about two invented products, a grocery-delivery app and a team-chat web app, so
  that near misses share a product's words (a voucher refused for its minimum against a voucher listed
  twice; a greyed-out order button against a delivery window lost during payment; a status that never
  clears against showing as away). Like holdout4 to holdout6 it lies outside `TUNING`: counted blind.
- `holdout8` (h8-001…, 95 reports of 40 problems, 13 with a single report) was written blind by a
  session-13 engineer who read neither the method nor the other parts (the file's first lines for the
  format only), and committed before any figure on it was read: a fitness tracker with a watch companion
  (24 problems) and a budgeting app with bank connections (16), near misses within each product (four
  exports; sync against missing heart rate; a refused purchase restore against a charge after a
  cancelled trial), 7 reports in six other languages, each a duplicate of one in English. Measured once
  on local-v5 unchanged (CSLS ranking, cut 0.52): top-5 recall 0.963, automatic grouping precision 1.000
  at recall 0.249. Its reports have not been read since; it is the blind part for whatever comes next.
  Asked afterwards of the tuning parts alone: a higher cut does not buy precision there (0.975 at 0.55,
  0.976 at 0.60, 0.971 at 0.66; without the merging of groups 0.981 at 0.57–0.59): the remaining
  mistakes are near misses the mixed score ranks as high as duplicates. A cut with more margin trades
  recall for no measured precision, so it was not adopted (and holdout7's mistakes stay unread).
- `holdout9` (h9-001…, 95 reports of 41 problems, 13 with a single report) was written blind by a
  session-14 engineer who read neither the method nor the data (only four lines of holdout8 quoted for the
  format), and committed before any figure on it was read: a podcast player (52 reports) and an e-scooter
  sharing app (43), near misses within each (downloads stuck against episodes that will not play offline;
  new-episode alerts missing against alerts twice; a ride that will not end outside the zone against billing
  that goes on after it ended), 19 bugs with logs, 7 reports in seven other languages, each a duplicate of
  a problem also reported in English.

- `local-v6` (session 14) reads holdout7's mistakes, which moves it to the tuning parts: its one wrong
  automatic pair (in two of the five arrival orders) shared one rare, incidental word ("clock") and the
  model gave it 0.517. A pair compared by words and embedding now joins on its own only where the model's
  own cosine is at least `grouping.EMBEDDING_FLOOR` (0.55, see there how it was chosen), and the cut,
  calibrated again on the five tuning parts, is 0.51 (precision there 0.951, recall 0.633). Measured once
  on holdout9 (blind): top-5 recall 0.902 (by plain cosine 0.927: 6 of its 82 reports with a duplicate
  miss it, 4 of them in another language than their duplicates), automatic grouping precision 0.950,
  recall 0.225; holdout8 (blind, read a second time): 0.963, 0.960 / 0.254 (at 0.52 under local-v5: 1.000 /
  0.249). The same run measured the int8 embedding (`cell.enrichment.int8`) side by side with its float32
  graph: 3.44 against 8.59 ms per report (×2.50), cosine of their vectors 0.9987 at worst; every figure of
  the run comes from the int8 embedding (on local-v5, int8 alone left every part's figures as they were with
  float32). Holdout9 is no longer blind for what comes next.

- Suggestions ranked by CSLS (issue 15, `cell.enrichment.index`): `similar` re-ranks the 50 nearest by
  cosine by cos(q, x) − r(x)/2, r(x) the mean cosine of x to its 10 nearest in the project (hubness
  reduction: a generic report near everything stops crowding every list), kept by the index as reports
  arrive; `top5` here replays that (`hubs`, `index.rank`, a mean over the arrival orders). The tuning
  parts cannot choose between methods by top-5 recall (it is 1.000 on each of them for every candidate),
  so the choice was made by principle and by finer figures on the tuning parts interleaved: the share of
  all of a report's duplicates that are in its first five (the goal's figure, made finer) and mean
  average precision. CSLS with the published k = 10 raised them from 0.976 / 0.960 (cosine) to
  0.985 / 0.964, the best of k 5–40 and weights 0.25–1.0 of r. Average query expansion (the query plus
  the mean of its 1–5 nearest) raised mean average precision more (0.972 with one) but the first-five
  share less (0.976–0.982): it pulls the query towards its nearest, which helps where that one is a
  duplicate (already a hit) and hurts where it is not (the misses the goal counts). Centring on the
  part's mean, removing its top principal directions, and embedding title and body apart lowered both.
  50 candidates:
  on the tuning parts 99 % of CSLS's first ten come from the first 28 by cosine (at most 59). Plainly,
  the blind parts' figures of these candidates were printed during the exploration (top-5, holdout4 /
  5 / 6: cosine 1.000 / 0.936 / 0.939; CSLS 1.000 / 0.987 / 0.927; title and body apart 1.000 / 0.974 /
  0.951), and the candidate count was also printed on them (20–50 alike); the choice above did not follow
  them, but holdout4–6 are no longer blind for this ranking: holdout7 is its blind part. Holdout6's misses
  are all reports written in Spanish, German or French whose duplicates are in English: all-MiniLM-L6-v2
  is an English model (cosines of −0.06 to 0.27 to the duplicate), which no re-ranking mends; a
  multilingual model would. Boilerplate stripping was not tried: device strings and "steps to reproduce"
  are rare in the data and, where present, part of the problem ("Android 14").

The per-part table and its RESULT lines (`enrichment.<part>_top5_recall`, `…_auto_precision`,
`…_auto_recall`, for each part alone, the tuning parts and all parts interleaved, then
`enrichment.auto_cut`, `enrichment.ms_per_report_core`, `enrichment.reports_per_s_core`) are what
local-v5 is judged by; they replace the single-cut figures earlier methods were measured with
(`enrichment.precision`, `enrichment.recall`, `enrichment.devtest_*`, `enrichment.tuned_*`, one pair per
part). Every grouping figure is a mean over several arrival orders.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from bench.harness import result
from cell.enrichment import embedding, graph, grouping, index, labels, summary
from cell.enrichment.jobs import RECENT
from cell.enrichment.text import Document, document

DATA = Path(__file__).parent / "data" / "enrichment" / "reports.jsonl"
SEEDS = (1, 2, 3, 4, 5)
TUNING = ("dev", "test", "holdout2", "holdout3", "holdout7")
"""Parts the method was developed or calibrated on. Every other part in the data is blind, found by its
`split` (a new part needs no change here)."""
WORKER_BATCH = 10
"""Texts per runtime call in the cost figure: a worker's job concurrency (cell.worker.work)."""


@dataclass
class Report:
    """One labelled report."""

    id: str
    cluster: str
    split: str
    doc: Document
    embedding: list[float] | None = None
    """The local embedding of the user's words (computed once per run by `embed`)."""


def content_of(row: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The interaction content and content_text the ingest endpoints would store for this report."""
    kind = row["type"]
    if kind == "chat":
        content = {"text": row["text"], **({"subject": row["subject"]} if row.get("subject") else {})}
        return content, row["text"]
    if kind == "survey":
        return {"text": row["text"]}, row["text"]
    content = {"title": row.get("title") or "", "description": row["text"]}
    return content, f"{content['title']}\n{row['text']}"


def load(path: Path = DATA) -> list[Report]:
    """The labelled set."""
    reports = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            content, text = content_of(row)
            reports.append(Report(row["id"], row["cluster"], row.get("split", "dev"),
                                  document(row["type"], content, text, row.get("logs"))))
    return reports


def embed(reports: Sequence[Report]) -> None:
    """Give every report its local embedding, as the job's local provider computes it (batched here)."""
    wanted = [r for r in reports if r.doc.words and r.embedding is None]
    vectors = embedding.embed([r.doc.words for r in wanted])
    if vectors is None:
        sys.exit("bench/enrichment: the embedding model is not installed (make install); or --words-only")
    for report, vector in zip(wanted, vectors, strict=True):
        report.embedding = vector


def group(reports: Sequence[Report], limits: grouping.Thresholds, seed: int) -> dict[str, str]:
    """Run the job's online grouping over the reports in one arrival order; report id → group id."""
    order = list(reports)
    random.Random(seed).shuffle(order)
    seen: list[grouping.Candidate] = []
    for n, report in enumerate(order):
        iid = f"{n:05d}-{report.id}"  # ids sort by arrival, as uuid7 does
        sig = grouping.signature(report.doc)
        if report.embedding is not None:
            sig.embedding, sig.embedding_model = report.embedding, embedding.MODEL
        idf = grouping.Idf([c.signature for c in seen] + [sig])
        decision = grouping.decide(iid, sig, seen, idf, limits)
        if decision.merged:
            for cand in seen:
                if cand.group_id in decision.merged:
                    cand.group_id = decision.group_id
        seen.append(grouping.Candidate(iid, decision.group_id, sig))
    return {c.interaction_id.split("-", 1)[1]: c.group_id for c in seen}


def pairwise(reports: Sequence[Report], groups: dict[str, str]) -> tuple[float, float]:
    """Pairwise precision and recall of a grouping against the labels."""
    tp = fp = fn = 0
    for a, b in combinations(reports, 2):
        same_truth, same_found = a.cluster == b.cluster, groups[a.id] == groups[b.id]
        tp += same_truth and same_found
        fp += same_found and not same_truth
        fn += same_truth and not same_found
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def score(reports: Sequence[Report], limits: grouping.Thresholds) -> tuple[float, float]:
    """Precision and recall averaged over the arrival orders."""
    runs = [pairwise(reports, group(reports, limits, seed)) for seed in SEEDS]
    return sum(p for p, _ in runs) / len(runs), sum(r for _, r in runs) / len(runs)


def describe(reports: Sequence[Report]) -> str:
    clusters = {r.cluster for r in reports}
    pairs = sum(len(m) * (len(m) - 1) // 2 for m in ([r for r in reports if r.cluster == c] for c in clusters))
    types: dict[str, int] = {}
    for r in reports:
        types[r.doc.type] = types.get(r.doc.type, 0) + 1
    return f"{len(reports)} reports, {len(clusters)} problems, {pairs} duplicate pairs, types {types}"


def sweep(reports: Sequence[Report], words_only: bool) -> None:
    """Precision and recall on the tuning reports over a range of join thresholds (the mixed one, or the
    word one with --words-only), the merge margin as set."""
    margin = grouping.MERGE_THRESHOLD - grouping.THRESHOLD
    print("join  precision  recall  f1   (the tuning parts)")
    joins = (0.30, 0.32, 0.33, 0.34, 0.35, 0.36, 0.38) if words_only else (0.41, 0.43, 0.44, 0.45, 0.46, 0.47, 0.49)
    for join in joins:
        limits = grouping.Thresholds(join=join, merge=join + margin) if words_only else \
            grouping.Thresholds(mixed=join, merge=grouping.THRESHOLD + margin)
        p, r = score(reports, limits)
        print(f"{join:.2f}  {p:.3f}      {r:.3f}   {f1(p, r):.3f}")


def show_examples(reports: Sequence[Report]) -> None:
    """A few summaries and labels, for a reader to judge."""
    for report in reports[:: max(1, len(reports) // 8)][:8]:
        found = labels.derive(report.doc)
        print(f"  [{report.doc.type}] {summary.extractive(report.doc)!r} -> {[lab for lab, _ in found]}")


def hubs(matrix: npt.NDArray[np.float32], seed: int) -> list[float | None]:
    """Each row's hubness r(x) as the HNSW path keeps it (`index.store`; the exact scan computes it over the
    vectors it reads, which on parts this small gives the same figures): the rows arrive in a shuffled order,
    each takes its cosines to the `index.REVERSE` nearest earlier rows as its neighbour list, and those rows
    take its cosine into theirs (`index.remember`)."""
    order = list(range(len(matrix)))
    random.Random(seed).shuffle(order)
    lists: dict[int, list[float]] = {}
    for n, i in enumerate(order):
        earlier = np.array(order[:n], dtype=int)
        cosines = matrix[earlier] @ matrix[i] if n else np.zeros(0, dtype=np.float32)
        near = earlier[np.argsort(-cosines, kind="stable")[:max(index.REVERSE, index.HUB_K)]]
        cos_of = dict(zip(earlier.tolist(), cosines.tolist(), strict=True))
        lists[i] = sorted((cos_of[j] for j in near.tolist()), reverse=True)[:index.HUB_K]
        for j in near.tolist():
            lists[j] = index.remember(lists[j], cos_of[j])
    return [index.hubness(lists[i]) for i in range(len(matrix))]


def top5(reports: Sequence[Report], k: int = 5) -> float:
    """Share of the reports that have a duplicate whose `similar` list holds one among its first k: the
    others ranked as `GET …/similar` ranks them (the `index.CANDIDATES` nearest by the cosine of their local
    embeddings, re-ranked by CSLS with the hubness the index keeps, `index.rank`), the part being one
    project. A mean over the arrival orders (the hubness depends on the order a little)."""
    with_vector = [r for r in reports if r.embedding is not None]
    if not with_vector:
        return 0.0
    matrix = np.array([r.embedding for r in with_vector], dtype=np.float32)
    ids = [uuid.UUID(int=i) for i in range(len(with_vector))]
    shares = []
    for seed in SEEDS:
        r = hubs(matrix, seed)
        hits = total = 0
        for i, report in enumerate(with_vector):
            if not any(o.cluster == report.cluster for j, o in enumerate(with_vector) if j != i):
                continue
            scores = matrix @ matrix[i]
            scores[i] = -np.inf
            near = np.argsort(-scores, kind="stable")[:max(index.CANDIDATES, k)]
            found = index.rank([index.Neighbour(ids[j], float(scores[j]), r[j]) for j in near], k)
            total += 1
            hits += any(with_vector[n.interaction_id.int].cluster == report.cluster for n in found)
        shares.append(hits / total if total else 1.0)
    return float(np.mean(shares))


def auto_limits(cut: float) -> grouping.Thresholds:
    """The job's thresholds with the mixed join threshold (the automatic cut) at `cut`."""
    return grouping.Thresholds(mixed=cut, merge=grouping.THRESHOLD + (grouping.MERGE_THRESHOLD - grouping.THRESHOLD))


def calibrate(tuning: Sequence[Report], target: float = grouping.AUTO_PRECISION) -> float:
    """The lowest cut (to 0.01) at which automatic grouping of the tuning parts, interleaved, keeps pairwise
    precision ≥ `target`, searched downwards from 0.75 in steps of 0.05 and then 0.01 (precision only grows
    with the cut, give or take an arrival order), each step printed for the reader."""

    def ok(cut: float) -> bool:
        p, r = score(tuning, auto_limits(cut))
        print(f"  cut {cut:.2f}  precision {p:.3f}  recall {r:.3f}", flush=True)
        return p >= target

    chosen = 0.80
    for coarse in range(75, 40, -5):
        if not ok(coarse / 100):
            break
        chosen = coarse / 100
    for fine in range(round(chosen * 100) - 1, round(chosen * 100) - 5, -1):
        if fine <= 40 or not ok(fine / 100):
            break
        chosen = fine / 100
    return chosen


PASSES = 5
"""Timed passes of `cost`: the figure is the median pass (a shared 2-core machine drifts by ±7 % from one
pass to the next; the first pass of a process is often the slowest)."""


def cost(reports: Sequence[Report], passes: int = PASSES) -> tuple[float, dict[str, float], list[float]]:
    """CPU milliseconds per report of the local enrichment on one core, and how they split by stage.

    Per report, what the job does with the local provider: the document read from the stored row
    (`text.document`), the embedding (onnxruntime, one thread, in batches of the worker's concurrency,
    `WORKER_BATCH`), the summary and labels, the signature, and the grouping decision against a project
    window of the job's size (`jobs.RECENT` earlier reports), rare-term keys (`Window.top`) included. The
    project's reports arrive as a stream that cycles through the labelled set under new ids, in the groups
    one arrival order gave them, and every report meets the `jobs.RECENT` rows before it in the stream,
    newest first, so consecutive reports share all but one row (the set has fewer reports than the window,
    so every report meets an earlier copy of itself and joins its group: the costlier kind of decision,
    which scores group centroids). As a running worker does, the window
    (`grouping.Window`) is kept between reports and filled before timing; per report the job's ids and
    groups are listed, the one row enriched since the last report is rebuilt from its stored form (terms,
    log terms, embedding as a list of floats) as `queries.recent` reads it, and the window applies
    that difference (`sync`: one row in, the oldest out) before it decides. Not included: Postgres and
    asyncpg reading the window's ids and that one row, and the older candidates sharing a rare term that a
    project with a longer history adds (`jobs.OLDER`).

    Until local-v5's vectorised `decide`, this figure grouped the set once in arrival order, so a report met
    on average half the set (~360 earlier reports, not the thousand of a real project) and the signatures
    were reused across decisions while the job read and rebuilt all of them for every report; until the
    window was kept (issue 15) it rebuilt the thousand candidates' arrays for every report (~3.7 ms of
    grouping per report on a quiet machine then). Process CPU time, so other load on the machine does not
    count. The figure is the median of `passes` passes (with each pass's total), and the process's word
    caches (`text.stem`, `labels._word_tokens`) are warm, as in a worker that has read a few thousand
    reports: a new report's rare words miss them and cost what every word cost before they were kept.
    """
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    groups = group(reports, auto_limits(grouping.MIXED_THRESHOLD), SEEDS[0])
    stored = []  # (id, group, stored terms, log terms, embedding list) of each report, as the table keeps them
    for report in reports:
        sig = grouping.signature(report.doc)
        stored.append((report.id, groups[report.id], sig.stored_terms(), sig.log_terms, report.embedding))
    timed = sorted((one_pass(rows, stored) for _ in range(passes)), key=lambda found: sum(found.values()))
    stages = timed[len(timed) // 2]
    return sum(stages.values()), stages, [sum(found.values()) for found in timed]


def one_pass(rows: Sequence[dict[str, Any]], stored: Sequence[StoredRow]) -> dict[str, float]:
    """One timed pass of `cost` over the labelled set: CPU ms per report by stage."""
    model = embedding.model()
    assert model is not None
    stages = {"document": 0.0, "embedding": 0.0, "summary, labels, signature": 0.0, "grouping": 0.0}
    clock = time.process_time
    began = clock()
    docs = [document(row["type"], *content_of(row), row.get("logs")) for row in rows]
    stages["document"] = clock() - began
    texts = [doc.words for doc in docs if doc.words]
    model.encode(texts)  # before the clock: a running worker's runtime has met these token counts before
    mark = clock()
    vectors: list[list[float]] = []
    for start in range(0, len(texts), WORKER_BATCH):
        vectors += model.encode(texts[start:start + WORKER_BATCH]).tolist()  # as `Batcher` hands them over
    stages["embedding"] = clock() - mark
    found = iter(vectors)
    limits = auto_limits(grouping.MIXED_THRESHOLD)
    streamed = stream_window(stored)
    window = grouping.Window()
    next(streamed)(window)  # before the clock: a running worker holds its project's window
    for n, doc in enumerate(docs):
        mark = clock()
        summary.extractive(doc)
        labels.derive(doc)
        sig = grouping.signature(doc)
        if doc.words:
            sig.embedding, sig.embedding_model = next(found), embedding.MODEL
        stages["summary, labels, signature"] += clock() - mark
        mark = clock()
        next(streamed)(window)
        window.top(sig)
        window.decide(f"new-{n}", sig, limits)
        stages["grouping"] += clock() - mark
    return {name: spent * 1000 / len(rows) for name, spent in stages.items()}


def against_float32(texts: Sequence[str], rounds: int = 3) -> dict[str, float]:
    """The int8 embedding the workers run against the float32 graph it was quantised from, side by side:
    CPU ms per text of each (the best of `rounds` alternating passes over the texts, one runtime call per
    text as `Encoder.encode` makes them, after a pass to warm both), and the cosine of their two vectors
    per text (the quality the quantisation keeps; the tests pin ≥ 0.99 to the vectors before onnxruntime)."""
    model = embedding.model()
    assert model is not None
    with zipfile.ZipFile(embedding._archive(embedding.PACKAGE)) as z, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "float32.onnx"
        onnx.save(graph.build(embedding._safetensors(z.read("model.safetensors"))), path)
        float32 = embedding.Encoder(path, z.read("tokenizer.json").decode())
    spent: dict[str, list[float]] = {"int8": [], "float32": []}
    vectors = {"int8": model.encode(texts), "float32": float32.encode(texts)}  # warm both
    for _ in range(rounds):
        for name, encoder in (("int8", model), ("float32", float32)):
            began = time.process_time()
            encoder.encode(texts)
            spent[name].append((time.process_time() - began) * 1000 / len(texts))
    cosines = np.einsum("ij,ij->i", vectors["int8"], vectors["float32"])
    return {"int8_ms": min(spent["int8"]), "float32_ms": min(spent["float32"]),
            "cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean())}


StoredRow = tuple[str, str, dict[str, float], dict[str, float], list[float] | None]


def stream_window(stored: Sequence[StoredRow]) -> Iterator[Callable[[grouping.Window], None]]:
    """For `cost`: a generator of steps, each bringing a kept window to the next report's candidates (the
    `jobs.RECENT` rows before it in a stream cycling through `stored`, newest first) as the job does: the
    ids and groups listed, the rows the window lacks rebuilt from their stored form, `Window.sync`."""

    def rebuilt(p: int) -> grouping.Candidate:
        rid, gid, terms, log_terms, vector = stored[p % len(stored)]
        return grouping.Candidate(f"{p:05d}-{rid}", gid, grouping.Signature.from_stored(
            dict(terms), dict(log_terms), list(vector) if vector is not None else None,
            embedding.MODEL if vector is not None else ""))

    listed = [(f"{p:05d}-{stored[p % len(stored)][0]}", stored[p % len(stored)][1])
              for p in range(len(stored) + RECENT + 1)]
    n = 0
    while True:
        rows = listed[n:n + RECENT][::-1]  # what `queries.recent` reads: newest first

        def step(window: grouping.Window, rows: list[tuple[str, str]] = rows, n: int = n) -> None:
            keys = [r[0] for r in rows]
            group_ids = [r[1] for r in rows]
            wanted = window.missing(keys)
            window.sync(keys, group_ids, {key: rebuilt(n + RECENT - 1 - keys.index(key)) for key in wanted}, len(keys))

        yield step
        n += 1


def main() -> None:
    reports = load()
    splits = sorted({r.split for r in reports}, key=lambda s: (s not in TUNING, s))
    parts = {split: [r for r in reports if r.split == split] for split in splits}
    tuning = [r for r in reports if r.split in TUNING]
    blind = [s for s in splits if s not in TUNING]
    words_only = "--words-only" in sys.argv
    if not words_only:
        embed(reports)
    if "--sweep" in sys.argv:
        sweep(tuning, words_only)
        return
    # The cost first, in a process that holds what a worker holds (the model, the reports), before the quality
    # figures below leave the benchmark's own objects and allocations behind.
    ms, stages, totals = cost(reports)
    print(f"set: {describe(reports)}")
    print(f"tuning parts: {', '.join(s for s in splits if s in TUNING)}; blind parts: {', '.join(blind) or 'none'}")
    cut = calibrate(tuning)
    print(f"method {grouping.METHOD}: automatic cut calibrated on the tuning parts interleaved for precision "
          f"≥ {grouping.AUTO_PRECISION}: {cut:.2f} (the code's MIXED_THRESHOLD: {grouping.MIXED_THRESHOLD:.2f})")
    if abs(cut - grouping.MIXED_THRESHOLD) > 1e-9:
        print("NOTE: grouping.MIXED_THRESHOLD differs from this calibration: set it to the cut above")
    limits = auto_limits(cut)
    print(f"{'part':10s} {'reports':>7s} {'top-5':>6s} {'auto P':>7s} {'auto R':>7s}")
    figures: dict[str, tuple[float, float, float]] = {}
    for name, part in (*parts.items(), ("tuning", tuning), ("all", reports)):
        p, r = score(part, limits)
        figures[name] = (top5(part), p, r)
        mark = "" if name in TUNING or name in ("tuning", "all") else "  (blind)"
        print(f"{name:10s} {len(part):7d} {figures[name][0]:6.3f} {p:7.3f} {r:7.3f}{mark}")
    print(f"cost: {ms:.2f} ms per report per core (CPU time; embedding in batches of {WORKER_BATCH}, document, "
          f"summary, labels, signature, grouping against a window of {RECENT} earlier reports): {1000 / ms:.0f} "
          f"reports/s per worker core (median of {len(totals)} passes: {', '.join(f'{t:.2f}' for t in totals)} ms)")
    print("  " + ", ".join(f"{name} {spent:.2f} ms" for name, spent in stages.items()))
    side = against_float32([r.doc.words for r in reports if r.doc.words])
    print(f"embedding side by side, CPU ms per report: int8 {side['int8_ms']:.2f}, the float32 graph it is "
          f"quantised from {side['float32_ms']:.2f} (×{side['float32_ms'] / side['int8_ms']:.2f}); cosine of their "
          f"vectors: min {side['cosine_min']:.4f}, mean {side['cosine_mean']:.4f}")
    show_examples(reports)
    for name, (t5, p, r) in figures.items():
        result(f"enrichment.{name}_top5_recall", t5, "ratio")
        result(f"enrichment.{name}_auto_precision", p, "ratio")
        result(f"enrichment.{name}_auto_recall", r, "ratio")
    result("enrichment.auto_cut", cut, "cosine")
    result("enrichment.ms_per_report_core", ms, "ms")
    result("enrichment.reports_per_s_core", 1000 / ms, "reports/s")
    result("enrichment.embedding_int8_ms", side["int8_ms"], "ms")
    result("enrichment.embedding_float32_ms", side["float32_ms"], "ms")
    result("enrichment.embedding_int8_speedup", side["float32_ms"] / side["int8_ms"], "ratio")
    result("enrichment.embedding_int8_cosine_min", side["cosine_min"], "cosine")


if __name__ == "__main__":
    main()
