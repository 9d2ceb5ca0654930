"""Every clinical-correctness score carries its n and a 95% Wilson interval."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medm2g.core.metrics.proportion import Proportion, format_proportion, wilson_interval


def test_the_interval_matches_a_hand_computed_wilson_interval():
    # 7 of 12, z = 1.96: centre (0.5833 + 1.9208/12) / (1 + 3.8415/12) = 0.5633, half-width 0.2521
    low, high = wilson_interval(7, 12)
    p, z, n = 7 / 12, 1.959963984540054, 12
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert (low, high) == pytest.approx((0.3195, 0.8067), abs=1e-4)  # the published table's value for 7/12
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


@given(st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_the_interval_holds_the_proportion_and_narrows_with_n(pair):
    successes, n = pair
    low, high = wilson_interval(successes, n)
    assert 0.0 <= low <= high <= 1.0
    if n:
        assert low <= successes / n <= high
        assert high - low >= wilson_interval(4 * successes, 4 * n)[1] - wilson_interval(4 * successes, 4 * n)[0]


def test_bad_counts_are_refused_and_scores_carry_all_four_keys():
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(5, 4)
    scores = Proportion(58, 100).as_scores("side_accuracy")
    assert scores["side_accuracy"] == 0.58 and scores["side_accuracy_n"] == 100
    assert format_proportion(scores, "side_accuracy") == "0.58 [0.48, 0.67]"
    assert format_proportion({"x": 0.5}, "x") == "0.50"  # an older record without an interval
