"""Retrieval recall@k, checked against a rank computed independently, with ties in expectation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medm2g.core.metrics.retrieval import recall_at_k


def brute_force_recall(query, gallery, k):
    """Rank of the true partner by sorting each row's cosine similarities (no ties in the data)."""
    q = query / query.norm(dim=1, keepdim=True)
    g = gallery / gallery.norm(dim=1, keepdim=True)
    hits = 0
    for i in range(len(q)):
        scores = (g @ q[i]).tolist()
        order = sorted(range(len(scores)), key=lambda j: -scores[j])
        hits += order.index(i) < k
    return hits / len(q)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 20), dim=st.integers(2, 8), seed=st.integers(0, 10_000), k=st.integers(1, 6))
def test_recall_matches_an_independent_ranking(n, dim, seed, k):
    generator = torch.Generator().manual_seed(seed)
    query, gallery = torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator)
    assert recall_at_k(query, gallery, (k,))[k] == pytest.approx(brute_force_recall(query, gallery, k))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 20), seed=st.integers(0, 10_000))
def test_recall_ignores_a_consistent_reordering_and_grows_with_k(n, seed):
    generator = torch.Generator().manual_seed(seed)
    query, gallery = torch.randn(n, 4, generator=generator), torch.randn(n, 4, generator=generator)
    order = torch.randperm(n, generator=generator)
    ks = (1, 2, 5, n)
    original = recall_at_k(query, gallery, ks)
    assert recall_at_k(query[order], gallery[order], ks) == pytest.approx(original)
    values = [original[k] for k in ks]
    assert values == sorted(values) and original[n] == 1.0


def test_a_perfect_match_scores_one_and_identical_items_score_chance():
    embeddings = torch.eye(6)
    assert recall_at_k(embeddings, embeddings * 3, (1, 5)) == {1: 1.0, 5: 1.0}
    identical = torch.ones(8, 3)  # every gallery item ties: random tie-breaking finds the partner at k/n
    assert recall_at_k(torch.randn(8, 3), identical, (1, 2, 4)) == pytest.approx({1: 1 / 8, 2: 2 / 8, 4: 4 / 8})


def test_shapes_must_match():
    with pytest.raises(ValueError, match=r"query and gallery must be \(N, D\) of one shape"):
        recall_at_k(torch.zeros(3, 2), torch.zeros(4, 2))
