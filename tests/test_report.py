"""Verdicts and report files."""

import json

import pytest
from matplotlib.figure import Figure

from reproduce.report import CaseOutcome, Claim, claim_entries, figure_png, write_report


def _outcome(claim, case, verdict, control=False, outcome=None, summary="s", message="", expected="reproduced"):
    outcome = outcome or ("passed" if (verdict == "not_reproduced") == control else "failed")
    condition = dict(name="x", op=">=", threshold=3.0, tolerance=0.0, rule="t", n=5, values=[4.0] * 5,
                     aggregate=4.0, interval=[4.0, 4.0], verdict=verdict)
    return CaseOutcome(claim, "quick", case + ("-control" if control else ""), control, outcome, verdict,
                       message=message, expected=expected, summary=summary, conditions=[condition])


@pytest.mark.parametrize(
    "main, control, expected",
    [
        (["reproduced", "reproduced"], ["not_reproduced"], ("reproduced", "failed_as_expected")),
        (["reproduced", "not_reproduced"], ["not_reproduced"], ("not_reproduced", "failed_as_expected")),
        (["reproduced", "reproduced"], ["reproduced"], ("inconclusive", "passed_unexpectedly")),
        (["reproduced", "inconclusive"], ["not_reproduced"], ("inconclusive", "failed_as_expected")),
        (["not_run"], ["not_run"], ("not_run", "not_run")),
    ],
    ids=["all-hold", "one-fails", "control-passes-too", "one-straddles", "nothing-ran"],
)
def test_verdict(main, control, expected):
    claim = "ddmlp.noisy_learned_later"
    cases = [_outcome(claim, f"quick-{i}", v) for i, v in enumerate(main)] + [_outcome(claim, "quick-0", v, True) for v in control]
    entry = next(e for e in claim_entries({claim: Claim.load(claim)}, cases, "quick") if e["id"] == claim)
    assert (entry["verdict"], entry["control"]) == expected


def test_claims_of_a_judged_paper_without_a_case_at_the_tier_are_listed():
    claim = Claim.load("ddmlp.noisy_learned_later")
    entries = claim_entries({claim.id: claim}, [_outcome(claim.id, "quick-mlp7", "reproduced")], "quick")
    others = [e for e in entries if e["id"] != claim.id]
    assert others and all(e["verdict"] == "not_at_tier" for e in others)


def test_every_claim_has_reference_data():
    claim = Claim.load("ddmlp.noisy_learned_later")
    assert claim.paper == "ddmlp" and claim.paper_value and claim.criterion and claim.control


def test_report_files(tmp_path):
    claim = Claim.load("ddmlp.noisy_learned_later")
    entries = claim_entries({claim.id: claim}, [
        _outcome(claim.id, "quick-mlp7", "reproduced", summary="clean at 1, noisy at 100"),
        _outcome(claim.id, "quick-mlp7", "not_reproduced", control=True, summary="x1"),
    ], "quick")
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    write_report(tmp_path, "quick", entries, {claim.id: figure_png(fig)})
    data = json.loads((tmp_path / "claims.json").read_text())
    assert data[0]["verdict"] == "reproduced" and data[0]["control"] == "failed_as_expected"
    assert {"id", "tier", "verdict", "cases", "criterion", "paper_value", "control", "rule"} <= set(data[0])
    assert data[0]["cases"][0]["conditions"][0]["n"] == 5
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "clean at 1, noisy at 100" in page
    assert f"figures/{claim.id}.paper.png" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "figures" / f"{claim.id}.paper.png").read_bytes()[:4] == b"\x89PNG"


def test_xfail_evidence_is_in_both_reports(tmp_path):
    claim = Claim.load("ddmlp.single_outlier_neuron")
    entries = claim_entries({claim.id: claim}, [
        _outcome(claim.id, "quick-mlp7", "not_reproduced", outcome="xfailed", summary="r 7", message="no outlier in budget",
                 expected="not_reproduced"),
        _outcome(claim.id, "quick-mlp7", "not_reproduced", control=True, summary="r 4"),
    ], "quick")
    write_report(tmp_path, "quick", entries, {})
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert "NOT reproduced" in text and "no outlier in budget" in text and "r 7" in text, name


def test_claim_table_is_in_both_reports(tmp_path):
    claim = Claim.load("ddmlp.noisy_learned_later")
    entries = claim_entries({claim.id: claim}, [_outcome(claim.id, "quick-mlp7", "reproduced")], "quick")
    table = (["noise", "paper gain", "our gain"], [["20%", "7.5%", "9.1%"], ["80%", "189%", "120%"]])
    write_report(tmp_path, "quick", entries, {}, {claim.id: table})
    assert "| 80% | 189% | 120% |" in (tmp_path / "report.md").read_text()
    assert "<td>189%</td>" in (tmp_path / "report.html").read_text()


def test_every_paper_file_is_valid_reference_data():
    from reproduce.report import REFERENCE

    for path in REFERENCE.glob("*.json"):
        for claim_id, entry in json.loads(path.read_text()).items():
            assert claim_id.split(".")[0] == path.stem
            assert Claim.load(claim_id).criterion == entry["criterion"]


def test_contradicting_claims_are_shown_side_by_side(tmp_path):
    ours, theirs = Claim.load("modnoise.noisy_memorized_faster_early"), Claim.load("ddmlp.noisy_learned_later")
    assert ours.contradicts == theirs.id and ours.setting and theirs.setting
    outcomes = [_outcome(ours.id, "quick-add-m513", "not_reproduced", outcome="xfailed", summary="x1.0",
                         message="same checkpoint", expected="not_reproduced"),
                _outcome(theirs.id, "quick-mlp7", "reproduced", summary="x50")]
    entries = claim_entries({ours.id: ours, theirs.id: theirs}, outcomes, "quick")
    write_report(tmp_path, "quick", entries, {})
    md = (tmp_path / "report.md").read_text()
    contrast = md[md.index("## Contrasts"):]
    assert ours.setting in contrast and theirs.setting in contrast and "x50" in contrast and "x1.0" in contrast
    assert "<h2>Contrasts</h2>" in (tmp_path / "report.html").read_text()
    alone = claim_entries({ours.id: ours}, outcomes[:1], "quick")
    write_report(tmp_path, "quick", alone, {})
    assert "not judged in this session" in (tmp_path / "report.md").read_text()
