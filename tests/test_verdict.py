"""Verdicts over seeds (reproduce/verdict.py) against planted truths."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce.verdict import OPS, Condition, StatisticError, claim_verdict, clopper_pearson, judge, spearman_quantum


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
    drop = 0.020000000000000018
    assert not Condition("drop", [drop], "<=", 0.02).holds(drop)
    assert Condition("drop", [drop], "<=", 0.02, quantum=1 / 500).holds(drop)


def test_strict_comparison_needs_more_than_half_a_quantum():
    assert not Condition("gain", [0.0], ">", 0, quantum=0.002).holds(0.001)
    assert Condition("gain", [0.0], ">", 0, quantum=0.002).holds(0.0011)


# --- no certainty without spread (planted truths) ---------------------------------------------

def test_two_seeds_decide_nothing_however_clear():
    assert Condition("x", [10.0, 10.1], ">=", 3).judge()["verdict"] == "inconclusive"
    assert Condition("x", [10.0, 10.1, 9.9], ">=", 3).judge()["verdict"] == "reproduced"


def test_identical_seeds_give_an_interval_of_the_statistic_s_resolution():
    """Three of three seeds at 0.955 against 0.95 with accuracies on 200 samples (quantum 0.005): the
    standard error's floor is half a quantum, so the interval is 0.955 +- t(2) x 0.0025 = +- 0.011,
    which straddles 0.95 - 0.0025: inconclusive, not [0.955, 0.955]."""
    j = Condition("acc", [0.955] * 3, ">=", 0.95, quantum=1 / 200).judge()
    assert j["interval"][1] - j["interval"][0] == pytest.approx(2 * 4.303 * 0.0025, rel=1e-3)
    assert j["verdict"] == "inconclusive"
    far = Condition("acc", [1.0] * 3, ">=", 0.95, quantum=1 / 10_000).judge()  # resolution far below the margin
    assert far["verdict"] == "reproduced" and far["interval"][0] < far["interval"][1]


def test_a_continuous_statistic_floors_at_its_stated_resolution_or_a_thousandth():
    stated = Condition("r", [5.0] * 4, ">", 4.9, resolution=0.1).judge()
    assert stated["verdict"] == "inconclusive" and stated["interval"][1] - stated["interval"][0] > 0.5
    default = Condition("r", [5.0] * 4, ">", 4.9).judge()  # floor 1e-3 x 4.9
    assert default["verdict"] == "reproduced" and default["interval"][0] < 5.0 < default["interval"][1]


def test_welch_needs_three_seeds_a_side_and_floors_its_standard_error():
    from reproduce.verdict import Difference

    assert Difference("d", [0.0, 0.01], [0.5, 0.51], ">", 0).judge()["verdict"] == "inconclusive"
    same = Difference("d", [0.5] * 3, [0.6] * 3, ">", 0, quantum=0.01).judge()
    assert same["interval"][0] < 0.1 < same["interval"][1] and same["verdict"] == "reproduced"


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


def _case(verdict: str, instances: dict | None = None, name: str = "c") -> dict:
    return {"case": name, "verdict": verdict, "instances": instances or {"": verdict}}


def test_claim_headline_takes_the_control_into_account():
    assert claim_verdict([_case("reproduced")], [_case("not_reproduced")])["verdict"] == "reproduced"
    passed = claim_verdict([_case("reproduced")], [_case("reproduced")])
    assert passed["verdict"] == "inconclusive" and "control" in passed["note"]
    assert claim_verdict([_case("reproduced"), _case("inconclusive")], [_case("not_reproduced")])["verdict"] == "inconclusive"
    assert claim_verdict([_case("reproduced"), _case("error")], [])["verdict"] == "error"
    assert claim_verdict([_case("not_run")], [_case("not_run")])["verdict"] == "not_run"


DEGREES = ("20%", "40%", "60%", "80%")


def test_a_control_passing_at_three_of_four_degrees_leaves_the_claim_inconclusive():
    """The masc pattern: an independent-corruption control clears the claim's bar at 20, 40 and 60%
    and fails only at 80%. As a conjunction the control case fails; judged instance by instance it
    passes where the claim holds, so the criterion cannot tell the phenomenon from its absence there."""
    control = _case("not_reproduced", dict(zip(DEGREES, ["reproduced"] * 3 + ["not_reproduced"])))
    head = claim_verdict([_case("reproduced")], [control])
    assert head["verdict"] == "inconclusive" and head["control"] == "passed_unexpectedly"
    assert "20%" in head["note"] and "80%" not in head["note"]


def test_a_control_failing_at_every_degree_leaves_the_claim_reproduced():
    control = _case("not_reproduced", dict.fromkeys(DEGREES, "not_reproduced"))
    head = claim_verdict([_case("reproduced")], [control])
    assert head["verdict"] == "reproduced" and head["control"] == "failed_as_expected"


def test_one_straddling_degree_of_the_control_is_enough_to_hold_the_claim_back():
    control = _case("not_reproduced", {**dict.fromkeys(DEGREES, "not_reproduced"), "40%": "inconclusive"})
    assert claim_verdict([_case("reproduced")], [control])["verdict"] == "inconclusive"


@pytest.mark.parametrize("missing", ["error", "not_run"])
def test_a_control_that_errs_or_did_not_run_never_leaves_the_claim_reproduced(missing):
    head = claim_verdict([_case("reproduced")], [_case(missing)])
    assert head["verdict"] == "inconclusive" and head["control"] == missing


def test_a_main_case_that_did_not_run_never_counts_as_agreement():
    head = claim_verdict([_case("reproduced"), _case("not_run")], [_case("not_reproduced")])
    assert head["verdict"] == "inconclusive" and "did not run" in head["note"]


# --- censored, ratio and bounded statistics: one seed cannot decide ---------------------------

FOUR_PASS = [25.0, 25.0, 25.0, 10.0]  # noisy/clean half-way factors far above 3
FOUR_FAIL = [1.0, 1.2, 0.9, 1.1]


def test_one_infinite_seed_under_binomial_gives_the_verdict_the_other_four_support():
    """inf is one seed on one side, like any other: where it agrees with the four, their verdict;
    where it disagrees it can hold a verdict back (inconclusive) but never make it."""
    assert Condition("x", FOUR_PASS, ">=", 3).judge()["verdict"] == "reproduced"
    assert Condition("x", FOUR_PASS + [math.inf], ">=", 3, rule="binomial").judge()["verdict"] == "reproduced"
    assert Condition("x", FOUR_FAIL + [-math.inf], ">=", 3, rule="binomial").judge()["verdict"] == "not_reproduced"
    assert Condition("x", FOUR_FAIL + [math.inf], ">=", 3, rule="binomial").judge()["verdict"] == "inconclusive"
    assert Condition("x", FOUR_PASS + [-math.inf], ">=", 3, rule="binomial").judge()["verdict"] == "inconclusive"


def test_one_censored_seed_in_a_finite_form_gives_the_verdict_the_other_four_support():
    """"Never reached half-way" as its finite bound, the last checkpoint over the clean half-way
    epoch (40): a lower bound of the factor, so counted on the failing side of the truth."""
    four = Condition("factor", FOUR_PASS, ">=", 3, scale="log").judge()["verdict"]
    five = Condition("factor", FOUR_PASS + [40.0], ">=", 3, scale="log").judge()["verdict"]
    assert four == five == "reproduced"
    four = Condition("factor", FOUR_FAIL, ">=", 3, scale="log").judge()["verdict"]
    five = Condition("factor", FOUR_FAIL + [1.5], ">=", 3, scale="log").judge()["verdict"]
    assert four == five == "not_reproduced"


@pytest.mark.parametrize("value", [math.inf, -math.inf])
@pytest.mark.parametrize("scale", ["linear", "log"])
def test_infinity_under_the_t_rule_is_one_line_naming_the_condition_and_seed(value, scale):
    if scale == "log" and value < 0:
        return  # a ratio is positive: refused earlier, see test_log_scale_refuses_a_non_positive_ratio
    with pytest.raises(StatisticError, match=r"'grid steps': seed 2 is -?inf \(no width fits\).*binomial") as info:
        judge([Condition("grid steps", [3.0, 4.0, value, 5.0], "<=", 10, scale=scale, never="no width fits")])
    assert "\n" not in str(info.value)


def test_t_interval_refuses_non_finite_values():
    from reproduce.verdict import t_interval

    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(StatisticError):
            t_interval([1.0, 2.0, bad])
    assert all(math.isnan(v) for v in t_interval([1.0]))  # one seed: no interval


@pytest.mark.parametrize("rule", ["t", "binomial"])
def test_nan_is_an_error_under_every_rule(rule):
    with pytest.raises(StatisticError, match=r"NaN for seed\(s\) \[3\]"):
        Condition("x", [1.0, 2.0, 3.0, math.nan], ">=", 0, rule=rule)


def test_ratios_on_the_log_scale_one_large_seed_cannot_swing():
    """MLP5's factors at another base seed: every seed far above 3, yet the arithmetic t-interval
    [-7.5, 81.5] straddles 3. On the log scale: the geometric mean 27.5 with [9.9, 76.4], clear of 3."""
    factors = [25.0, 25.0, 25.0, 100.0, 10.0]
    arithmetic = Condition("factor", factors, ">=", 3).judge()
    assert arithmetic["verdict"] == "inconclusive" and arithmetic["interval"][0] == pytest.approx(-7.47, abs=0.01)
    log = Condition("factor", factors, ">=", 3, scale="log").judge()
    assert log["verdict"] == "reproduced" and log["scale"] == "log"
    assert log["aggregate"] == pytest.approx(math.prod(factors) ** (1 / 5))
    assert log["interval"][0] == pytest.approx(9.87, abs=0.01) and log["interval"][1] == pytest.approx(76.42, abs=0.01)
    assert Condition("factor", [1.0, 1.2, 0.9, 1.1, 1.0], ">=", 3, scale="log").judge()["verdict"] == "not_reproduced"


def test_log_scale_refuses_a_non_positive_ratio():
    with pytest.raises(StatisticError, match=r"'factor'.*positive, seed\(s\) \[1\]"):
        Condition("factor", [2.0, 0.0, 3.0], ">=", 1, scale="log")


def test_bounded_interval_is_clipped_and_the_verdict_unchanged():
    accuracies = [0.999, 1.0, 0.998, 1.0, 0.994]
    free = Condition("train accuracy", accuracies, ">=", 0.99).judge()
    bounded = Condition("train accuracy", accuracies, ">=", 0.99, bounds=(0, 1)).judge()
    assert free["interval"][1] > 1 and bounded["interval"][1] == 1.0 and bounded["interval"][0] == free["interval"][0]
    assert bounded["verdict"] == free["verdict"] == "reproduced" and bounded["bounds"] == [0.0, 1.0]
    with pytest.raises(StatisticError, match="outside the statistic's bounds"):
        Condition("rho", [0.5, -1.5], "<", 0, bounds=(-1, 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=3, max_size=8), st.floats(0.001, 0.999), st.sampled_from(OPS),
       st.sampled_from([0.0, 0.01]))
def test_clipped_interval_reads_the_same_verdict_where_the_threshold_is_inside_the_bounds(values, threshold, op, quantum):
    """The proof of the module docstring, checked: a bound clipping moves lies beyond the range on
    the side away from the threshold, so it compares with the threshold as the range's end does."""
    c = Condition("acc", values, op, threshold, quantum=quantum, bounds=(0, 1))
    if not 0 < c.bound() < 1:
        return  # the claim is then not about the inside of the range
    j = c.judge()
    low, high = j["interval"]
    assert 0 <= low <= high <= 1
    reread = "reproduced" if c.holds(low) and c.holds(high) else "not_reproduced" if not (c.holds(low) or c.holds(high)) else "inconclusive"
    assert reread == j["verdict"] == Condition("acc", values, op, threshold, quantum=quantum).judge()["verdict"]


def test_a_condition_rule_overrides_the_claim_rule_through_judge():
    conditions = [Condition("steps", [3.0, 4.0, math.inf, 5.0, 2.0], "<=", 10, rule="binomial", never="no width fits"),
                  Condition("factor", [5.0, 5.2, 4.9, 5.1, 5.0], ">=", 3)]
    verdict, judged = judge(conditions, rule="t")  # the claim's rule, as judge_case passes it
    assert [j["rule"] for j in judged] == ["binomial", "t"]
    assert judged[0]["n_never"] == 1 and judged[0]["never"] == "no width fits"
    assert verdict == "inconclusive"  # 4 of 5 seeds: the never-seed holds the verdict back, it does not decide it


def test_left_out_is_recorded_and_must_be_strings():
    j = Condition("CS", [0.2, 0.3], "<", 1, left_out=("seed 1: class 7 has no noisy sample",)).judge()
    assert j["left_out"] == ["seed 1: class 7 has no noisy sample"]
    with pytest.raises(StatisticError, match="left_out"):
        Condition("CS", [0.2, 0.3], "<", 1, left_out="seed 1: class 7")


def test_report_of_a_censored_condition_has_no_infinite_interval(tmp_path):
    """Rendered through write_report: claims.json is strict JSON, the interval finite or absent,
    the never-seeds in words beside the verdict, what was left out shown under the case."""
    import json
    import re

    from reproduce.report import stub_entry, write_report

    censored = Condition("grid steps", [3.0, 4.0, math.inf, 5.0, math.inf], "<=", 10, rule="binomial",
                         never="no width fits", left_out=("seed 4: width 64 did not train",)).judge()
    one_seed = Condition("bump", [0.1], ">", 0).judge()
    case = {"case": "quick-mlp", "control": False, "outcome": "failed", "verdict": "inconclusive", "message": "",
            "summary": "steps", "numbers": {"steps": [3.0, math.inf]}, "conditions": [censored, one_seed]}
    entry = {**stub_entry("smooth.sharpness_peaks_at_threshold", "small"), "verdict": "inconclusive",
             "expected": "reproduced", "as_expected": False, "cases": [case]}
    write_report(tmp_path, "quick", [entry], {})

    def refuse(constant):
        raise AssertionError(f"claims.json holds {constant}, which is not JSON")

    stored = json.loads((tmp_path / "claims.json").read_text(), parse_constant=refuse)
    values = [c for e in stored for k in e["cases"] for c in k["conditions"]][0]["values"]
    assert values == [3.0, 4.0, "inf", 5.0, "inf"] and [float(v) for v in values][2] == math.inf
    for text in ((tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()):
        assert "no width fits in 2 of 5 seeds" in text and "no interval (1 seed)" in text
        assert "seed 4: width 64 did not train" in text
        assert not re.search(r"\[[^\]\n]*inf", text, re.IGNORECASE)


def test_headline_reads_a_binomial_share_against_one_half():
    """The share's interval is not on the statistic's scale: 4 of 5 seeds is closer to failing than
    a t-interval far above its threshold."""
    from reproduce.report import headline

    share = Condition("steps", [3.0, 4.0, math.inf, 5.0, 2.0], "<=", 10, rule="binomial").judge()
    clear = Condition("factor", [5.0, 5.2, 4.9, 5.1, 5.0], ">=", 3).judge()
    assert headline({"cases": [{"control": False, "conditions": [clear, share]}]})["name"] == "steps"
