"""Verdicts over seeds (reproduce/verdict.py) against planted truths."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce.verdict import Condition, StatisticError, claim_verdict, clopper_pearson, judge, spearman_quantum


def test_clear_effect_is_reproduced_and_its_mirror_is_not():
    assert Condition("x", [5.0, 5.2, 4.9, 5.1, 5.0], ">=", 3).judge()["verdict"] == "reproduced"
    assert Condition("x", [1.0, 1.2, 0.9, 1.1, 1.0], ">=", 3).judge()["verdict"] == "not_reproduced"


def test_interval_straddling_the_threshold_is_inconclusive():
    j = Condition("x", [2.0, 4.0, 2.5, 3.5, 3.0], ">=", 3).judge()
    assert j["verdict"] == "inconclusive"
    assert j["interval"][0] < 3 < j["interval"][1]
    assert j["n"] == 5 and j["aggregate"] == pytest.approx(3.0)


def test_half_a_quantum_decides_a_float_sum_at_the_threshold():
    # the largest drop 0.020000000000000018 of an accuracy on 500 samples against a limit of 0.02
    drop = [0.020000000000000018] * 5
    assert Condition("drop", drop, "<=", 0.02).judge()["verdict"] == "not_reproduced"
    assert Condition("drop", drop, "<=", 0.02, quantum=1 / 500).judge()["verdict"] == "reproduced"


def test_strict_comparison_needs_more_than_half_a_quantum():
    assert Condition("gain", [0.001] * 4, ">", 0, quantum=0.002).judge()["verdict"] == "not_reproduced"
    assert Condition("gain", [0.004] * 4, ">", 0, quantum=0.002).judge()["verdict"] == "reproduced"


def test_spearman_quantum_of_four_points_is_a_fifth():
    assert spearman_quantum(4) == pytest.approx(0.2)


def test_one_seed_decides_nothing():
    j = Condition("x", [10.0], ">=", 3).judge()
    assert j["verdict"] == "inconclusive" and j["interval"] is None  # no interval, never [-inf, inf]


def test_nan_statistic_is_an_error_not_a_verdict():
    with pytest.raises(StatisticError, match="NaN"):
        Condition("x", [1.0, float("nan")], ">=", 0)


def test_infinite_value_under_the_t_rule_is_refused_naming_condition_and_seed():
    """Two "never crossed" seeds made the mean infinite and the verdict theirs alone: refused now."""
    with pytest.raises(StatisticError, match=r"'factor': seed 1 is inf \(never crossed\).*binomial"):
        Condition("factor", [5.0, math.inf, math.inf], ">=", 3, never="never crossed").judge()


def test_binomial_rule_at_five_seeds_needs_all_five():
    """Clopper-Pearson one-sided 95% lower bound of 5/5 is 0.549 (> 1/2); of 4/5 it is 0.343."""
    assert clopper_pearson(5, 5)[0] == pytest.approx(0.549, abs=1e-3)
    assert Condition("h", [1, 1, 1, 1, 1], ">=", 1).judge("binomial")["verdict"] == "reproduced"
    assert Condition("h", [1, 1, 1, 1, 0], ">=", 1).judge("binomial")["verdict"] == "inconclusive"
    assert Condition("h", [0, 0, 0, 0, 0], ">=", 1).judge("binomial")["verdict"] == "not_reproduced"


def test_conjunction():
    ok = Condition("a", [5.0, 5.1, 4.9], ">=", 3)
    unclear = Condition("b", [2.0, 4.0, 3.0], ">=", 3)
    bad = Condition("c", [0.0, 0.1, 0.0], ">=", 3)
    assert judge([ok])[0] == "reproduced"
    assert judge([ok, unclear])[0] == "inconclusive"
    assert judge([ok, unclear, bad])[0] == "not_reproduced"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=2, max_size=8), st.floats(-50, 50))
def test_mirrored_condition_never_agrees(values, threshold):
    """x >= t and x < t cannot both be reproduced: the verdicts are those of an interval, not of luck."""
    a = Condition("a", values, ">=", threshold).judge()["verdict"]
    b = Condition("b", values, "<", threshold).judge()["verdict"]
    assert not (a == "reproduced" and b == "reproduced")
    if a == "reproduced":
        assert b == "not_reproduced"


def test_claim_headline_takes_the_control_into_account():
    assert claim_verdict(["reproduced"], ["not_reproduced"])["verdict"] == "reproduced"
    passed = claim_verdict(["reproduced"], ["reproduced"])
    assert passed["verdict"] == "inconclusive" and "control" in passed["note"] and not passed["as_expected"]
    assert claim_verdict(["reproduced", "inconclusive"], ["not_reproduced"])["verdict"] == "inconclusive"
    assert claim_verdict(["reproduced", "error"], [])["verdict"] == "error"
    assert claim_verdict(["not_run"], ["not_run"])["verdict"] == "not_run"


def test_expected_failure_that_holds_is_reproduced_and_says_the_mark_is_stale():
    h = claim_verdict(["reproduced"], ["not_reproduced"], expected="not_reproduced")
    assert h["verdict"] == "reproduced" and "stale" in h["note"] and not h["as_expected"]
    assert claim_verdict(["inconclusive"], ["not_reproduced"], expected="not_reproduced")["as_expected"]
    assert not claim_verdict(["inconclusive"], ["not_reproduced"])["as_expected"]  # a regression where reproduced is expected


def test_control_of_an_expected_failure_is_reported_not_enforced():
    h = claim_verdict(["inconclusive"], ["inconclusive"], expected="not_reproduced")
    assert h["control"] == "inconclusive" and h["as_expected"]
    assert not claim_verdict(["reproduced"], ["inconclusive"])["as_expected"]
