"""Verdicts and report files."""

import json

import pytest
from matplotlib.figure import Figure

from reproduce.report import CaseOutcome, Claim, claim_entries, figure_png, verdict, write_report


def _case(outcome, control=False, case="quick-a"):
    return CaseOutcome("ddmlp.x", "quick", case + ("-control" if control else ""), control, outcome, {"summary": "s"})


@pytest.mark.parametrize(
    "main, control, expected",
    [
        (["passed", "passed"], ["passed"], ("reproduced", "failed_as_expected")),
        (["passed", "failed"], ["passed"], ("not_reproduced", "failed_as_expected")),
        (["xfailed", "passed"], ["failed"], ("xfail", "passed_unexpectedly")),
        (["skipped"], ["skipped"], ("not_run", "not_run")),
    ],
    ids=["all-pass", "one-fails", "xfail-and-control-passes", "nothing-ran"],
)
def test_verdict(main, control, expected):
    cases = [_case(o, case=f"quick-{i}") for i, o in enumerate(main)] + [_case(o, True) for o in control]
    assert verdict(cases) == expected


def test_every_claim_has_reference_data():
    claim = Claim.load("ddmlp.noisy_learned_later")
    assert claim.paper == "ddmlp" and claim.paper_value and claim.criterion and claim.control


def test_report_files(tmp_path):
    claim = Claim.load("ddmlp.noisy_learned_later")
    entries = claim_entries({claim.id: claim}, [
        CaseOutcome(claim.id, "quick", "quick-mlp7", False, "passed", {"summary": "clean at 1, noisy at 100"}),
        CaseOutcome(claim.id, "quick", "quick-mlp7-control", True, "passed", {"summary": "x1"}),
    ], "quick")
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    write_report(tmp_path, "quick", entries, {claim.id: figure_png(fig)})
    data = json.loads((tmp_path / "claims.json").read_text())
    assert data[0]["verdict"] == "reproduced" and data[0]["control"] == "failed_as_expected"
    assert {"id", "tier", "verdict", "statistic", "criterion", "paper_value", "control"} <= set(data[0])
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "clean at 1, noisy at 100" in page
    assert f"figures/{claim.id}.paper.png" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "figures" / f"{claim.id}.paper.png").read_bytes()[:4] == b"\x89PNG"


def test_xfail_evidence_is_in_both_reports(tmp_path):
    claim = Claim.load("ddmlp.single_outlier_neuron")
    entries = claim_entries({claim.id: claim}, [
        CaseOutcome(claim.id, "quick", "quick-mlp7", False, "xfailed", {"summary": "r 7"}, "no outlier in budget"),
        CaseOutcome(claim.id, "quick", "quick-mlp7-control", True, "passed", {"summary": "r 4"}),
    ], "quick")
    write_report(tmp_path, "quick", entries, {})
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert "not reproduced at this tier" in text and "no outlier in budget" in text, name


def test_claim_table_is_in_both_reports(tmp_path):
    claim = Claim.load("ddmlp.noisy_learned_later")
    entries = claim_entries({claim.id: claim}, [
        CaseOutcome(claim.id, "quick", "quick-mlp7", False, "passed", {"summary": "s"})], "quick")
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
    outcomes = [CaseOutcome(ours.id, "quick", "quick-add-m513", False, "xfailed", {"summary": "x1.0"}, "same checkpoint"),
                CaseOutcome(theirs.id, "quick", "quick-mlp7", False, "passed", {"summary": "x50"})]
    entries = claim_entries({ours.id: ours, theirs.id: theirs}, outcomes, "quick")
    write_report(tmp_path, "quick", entries, {})
    md = (tmp_path / "report.md").read_text()
    contrast = md[md.index("## Contrasts"):]
    assert ours.setting in contrast and theirs.setting in contrast and "x50" in contrast and "x1.0" in contrast
    assert "<h2>Contrasts</h2>" in (tmp_path / "report.html").read_text()
    alone = claim_entries({ours.id: ours}, outcomes[:1], "quick")
    write_report(tmp_path, "quick", alone, {})
    assert "not judged in this session" in (tmp_path / "report.md").read_text()
