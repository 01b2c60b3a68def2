"""Entries judged from planted evidence, and the report files written from them."""

import dataclasses
import json

import pytest
from matplotlib.figure import Figure

from reproduce.judge import Absent, Case, Evidence, declared, judge_claim
from reproduce.report import figure_png, write_report
from reproduce.verdict import Condition

CLAIMS = declared()


def planted(claim_id: str, by_case: dict, tier: str = "small"):
    """The declared claim with its statistic replaced: `by_case` maps a case id to the per-seed values
    of one condition (or to an exception to raise)."""
    def evidence(ds, case: Case) -> Evidence:
        found = by_case[case.id]
        if isinstance(found, Exception):
            raise found
        return Evidence([Condition("x", found, ">=", 3, instance="20%")], f"summary of {case.id}")

    return dataclasses.replace(CLAIMS[claim_id], evidence=evidence)


HOLDS, FAILS, STRADDLES = [5.0, 5.2, 4.9, 5.1], [1.0, 1.1, 0.9, 1.0], [2.0, 4.0, 2.5, 3.5]
CLAIM = "ddmlp.epochwise_double_descent"  # small: main small-mlp7, control small-mlp7-control-twins


@pytest.mark.parametrize("main, control, expected", [
    (HOLDS, FAILS, ("reproduced", "failed_as_expected")),
    (FAILS, FAILS, ("not_reproduced", "failed_as_expected")),
    (HOLDS, HOLDS, ("inconclusive", "passed_unexpectedly")),
    (HOLDS, STRADDLES, ("inconclusive", "inconclusive")),
    (HOLDS, ValueError("boom"), ("inconclusive", "error")),
], ids=["holds", "fails", "control-passes-too", "control-straddles", "control-errs"])
def test_verdict_and_control(main, control, expected):
    claim = planted(CLAIM, {"small-mlp7": main, "small-mlp7-control-twins": control})
    entry = judge_claim(claim, "small", ds=None)
    assert (entry["verdict"], entry["control"]) == expected


def test_an_absent_precondition_is_on_the_failing_side_with_its_reason():
    claim = planted(CLAIM, {"small-mlp7": Absent("no outlier to locate"), "small-mlp7-control-twins": FAILS})
    entry = judge_claim(claim, "small", ds=None)
    case = entry["cases"][0]
    assert entry["verdict"] == case["verdict"] == "not_reproduced" and "no outlier to locate" in case["message"]


def test_an_error_is_a_regression_whatever_was_expected():
    claim = planted(CLAIM, {"small-mlp7": KeyError("accuracy"), "small-mlp7-control-twins": FAILS})
    entry = judge_claim(claim, "small", ds=None)
    assert entry["verdict"] == "error" and entry["regression"] and "KeyError" in entry["cases"][0]["message"]


def test_a_contradicted_prediction_is_shown_and_no_regression():
    """A prediction stands only where no measurement is recorded (record={}; the small verdicts of CLAIM are
    measured in data/expected/small.json): contradicted, it is shown, not a regression."""
    claim = dataclasses.replace(planted(CLAIM, {"small-mlp7": HOLDS, "small-mlp7-control-twins": FAILS}),
                                predicted={"small": ("not_reproduced", "a planted prediction")})
    entry = judge_claim(claim, "small", ds=None, record={})
    assert entry["expectation"] == "predicted" and entry["as_expected"] is False and not entry["regression"]


def test_a_contradicted_measurement_is_a_regression():
    claim = planted(CLAIM, {"small-mlp7": HOLDS, "small-mlp7-control-twins": FAILS})
    entry = judge_claim(claim, "small", ds=None, record={"verdicts": {CLAIM: "not_reproduced"}})
    assert entry["expectation"] == "measured" and entry["as_expected"] is False and entry["regression"]


def test_a_claim_with_no_case_at_the_tier_names_the_tiers_that_judge_it():
    entry = judge_claim(CLAIMS[CLAIM], "quick", ds=None)
    assert entry["verdict"] == "not_at_tier" and entry["judged_at"] == ["small", "medium", "full"]


def test_the_criterion_text_is_rendered_from_the_conditions():
    claim = planted(CLAIM, {"small-mlp7": HOLDS, "small-mlp7-control-twins": FAILS})
    assert judge_claim(claim, "small", ds=None)["criterion"] == "x >= 3 (t) at 20%"


def test_report_files(tmp_path):
    claim = planted(CLAIM, {"small-mlp7": HOLDS, "small-mlp7-control-twins": FAILS})
    entries = [judge_claim(claim, "small", ds=None)]
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    write_report(tmp_path, "small", entries, {CLAIM: figure_png(fig)})
    data = json.loads((tmp_path / "claims.json").read_text())
    assert data[0]["verdict"] == "reproduced" and data[0]["control"] == "failed_as_expected"
    assert {"id", "tier", "verdict", "cases", "criterion", "paper_value", "control", "rule", "expectation"} <= set(data[0])
    assert data[0]["cases"][0]["conditions"][0]["n"] == 4
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "summary of small-mlp7" in page
    assert f"figures/{CLAIM}.paper.png" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "figures" / f"{CLAIM}.paper.png").read_bytes()[:4] == b"\x89PNG"


def test_claim_table_is_in_both_reports(tmp_path):
    claim = planted(CLAIM, {"small-mlp7": HOLDS, "small-mlp7-control-twins": FAILS})
    table = (["noise", "paper gain", "our gain"], [["20%", "7.5%", "9.1%"], ["80%", "189%", "120%"]])
    write_report(tmp_path, "small", [judge_claim(claim, "small", ds=None)], {}, {CLAIM: table})
    assert "| 80% | 189% | 120% |" in (tmp_path / "report.md").read_text()
    assert "<td>189%</td>" in (tmp_path / "report.html").read_text()


def test_contradicting_claims_are_shown_side_by_side(tmp_path):
    ours, theirs = CLAIMS["modnoise.noisy_memorized_faster_early"], CLAIMS["ddmlp.noisy_learned_later"]
    assert ours.contradicts == theirs.id
    a = planted(ours.id, {c.id: FAILS for c in ours.cases_at("quick")})
    b = planted(theirs.id, {c.id: (HOLDS if not c.control else FAILS) for c in theirs.cases_at("quick")})
    entries = [judge_claim(a, "quick", ds=None), judge_claim(b, "quick", ds=None)]
    write_report(tmp_path, "quick", entries, {})
    md = (tmp_path / "report.md").read_text()
    contrast = md[md.index("## Contrasts"):]
    assert entries[0]["setting"] in contrast and "add-m513" in contrast and "mlp7" in contrast
    assert "<h2>Contrasts</h2>" in (tmp_path / "report.html").read_text()
    write_report(tmp_path, "quick", entries[:1], {})
    assert "not judged in this session" in (tmp_path / "report.md").read_text()


def test_stubs_of_papers_not_judged_hold_no_seed():
    """`run --paper masc --seed 1` leaves the other papers as not-run stubs; judging seed 1 again in the
    same store (e.g. `pytest claims --seed 1`) must not read them as verdicts of seed 0."""
    from reproduce.report import check_seed, merge_entries, stub_entry

    stub = stub_entry("masc.beats_model", "small")  # a claim with small cases
    assert stub["cases"] and all(c["verdict"] == "not_run" for c in stub["cases"])
    merged = merge_entries([stub], [], "small", seed=1)
    assert len(merged) > 1
    judged = {**stub, "seed": 0, "cases": [{**stub["cases"][0], "verdict": "reproduced"}]}
    with pytest.raises(Exception, match="base seed 0, not 1"):
        check_seed([judged], 1, __import__("pathlib").Path("claims.json"))
