"""The Welch interval and `Difference`: a difference of two means over all seeds of both sides."""

import math

import numpy as np
import pytest
from scipy import stats

from reproduce.verdict import Difference, StatisticError, judge, welch_interval


def test_welch_interval_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 7), rng.normal(1, 3, 12)
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert np.allclose(welch_interval(a, b), (ci.low, ci.high))


def test_welch_interval_degenerate_cases():
    assert welch_interval([1.0], [2.0, 3.0]) == (-math.inf, math.inf)  # one seed: nothing decided
    assert welch_interval([1.0, 1.0], [3.0, 3.0, 3.0]) == (2.0, 2.0)  # no spread, no floor: the difference itself
    low, high = welch_interval([1.0, 1.0], [3.0, 3.0, 3.0], se_floor=0.1)  # the floor: df of the smaller side
    assert high - low == pytest.approx(2 * stats.t.ppf(0.975, 1) * 0.1)


@pytest.mark.parametrize("shift, verdict", [(2.0, "reproduced"), (-2.0, "not_reproduced"), (0.0, "inconclusive")])
def test_difference_planted_truth(shift, verdict):
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.3, 10)
    b = rng.normal(shift, 0.3, 15)  # unequal seed counts: every seed counts, none paired
    j = Difference("step", a, b, ">", 0).judge()
    assert j["verdict"] == verdict and (j["n_a"], j["n_b"], j["n"]) == (10, 15, 25)
    assert j["rule"] == "welch" and j["interval"][0] <= j["aggregate"] <= j["interval"][1]


def test_difference_tolerates_half_a_quantum():
    assert Difference("step", [0.0], [0.0], ">=", 0.01, quantum=0.02)._compare.holds(0.004)  # within 0.01 of 0.01
    assert not Difference("step", [0.0], [0.0], ">=", 0.01)._compare.holds(0.004)


def test_difference_joins_a_criterion_and_refuses_bad_input():
    verdict, judged = judge([Difference("d", [0.0, 0.1, 0.05], [1.0, 1.1, 1.05], ">", 0)])
    assert verdict == "reproduced" and len(judged) == 1
    with pytest.raises(StatisticError, match="not finite"):
        Difference("d", [0.0, math.inf], [1.0, 2.0], ">", 0)
    with pytest.raises(StatisticError, match="nan|not finite"):
        Difference("d", [0.0, 1.0], [math.nan, 2.0], ">", 0)
    with pytest.raises(StatisticError, match="no seeds"):
        Difference("d", [], [1.0], ">", 0)
    with pytest.raises(StatisticError, match="Welch"):
        Difference("d", [0.0, 1.0], [1.0, 2.0], ">", 0).judge("binomial")
