"""The ranking of `GET …/similar` on small cases: CSLS takes back a hub's closeness to everything, a row
without hubness is neither favoured nor pushed down, and neighbour lists keep their best `HUB_K`."""

from __future__ import annotations

import uuid

import pytest

from cell.enrichment import index
from cell.enrichment.index import Neighbour

A, B, C = (uuid.UUID(int=n) for n in (1, 2, 3))


def test_a_hub_gives_way_to_a_row_close_to_the_query_alone() -> None:
    hub = Neighbour(A, 0.62, hubness=0.60)  # near the query, and as near everything else
    specific = Neighbour(B, 0.58, hubness=0.30)
    assert [n.interaction_id for n in index.rank([hub, specific], 2)] == [B, A]
    # With equal hubness the cosine decides, as before.
    assert [n.interaction_id for n in index.rank([Neighbour(A, 0.62, 0.4), Neighbour(B, 0.58, 0.4)], 2)] == [A, B]


def test_rows_without_hubness_get_the_candidates_mean() -> None:
    old = Neighbour(A, 0.50, hubness=None)
    known = [Neighbour(B, 0.52, hubness=0.2), Neighbour(C, 0.49, hubness=0.6)]  # mean 0.4
    # B: 0.52 - 0.1 = 0.42; A: 0.50 - 0.2 = 0.30; C: 0.49 - 0.3 = 0.19
    assert [n.interaction_id for n in index.rank([old, *known], 3)] == [B, A, C]
    assert index.rank([Neighbour(A, 0.3), Neighbour(B, 0.5)], 1)[0].interaction_id == B  # none known: cosine
    assert index.rank([old], 0) == []


def test_neighbour_lists_keep_the_best_k() -> None:
    cosines: list[float] | None = None
    for c in (0.1, 0.9, 0.5, *[0.2] * index.HUB_K):
        cosines = index.remember(cosines, c)
    assert cosines == [0.9, 0.5, *[0.2] * (index.HUB_K - 2)]
    assert index.remember(cosines, 0.05) == cosines  # below the k-th: no change
    assert index.hubness([0.5, 0.3]) == 0.4 and index.hubness([]) is None


def test_the_score_shown_is_the_cosine_corrected_for_both_sides_hubness() -> None:
    ranked = index.rank([Neighbour(A, 0.62, hubness=0.60), Neighbour(B, 0.58, hubness=0.30)], 2, query_hubness=0.40)
    assert [n.score for n in ranked] == [pytest.approx(0.58 + 0.05), pytest.approx(0.62 - 0.10)]
    # A row as crowded as the query keeps its cosine; without the query's hubness, the candidates' mean.
    assert index.rank([Neighbour(A, 0.5, hubness=0.4)], 1, 0.4)[0].score == pytest.approx(0.5)
    assert index.rank([Neighbour(A, 0.5, 0.2), Neighbour(B, 0.4, 0.6)], 2)[1].score == pytest.approx(0.4 - 0.1)
