"""Each claim is declared once (reproduce/claims/<paper>.py) and every tier that judges it says what
it expects there, with the evidence: a measurement (data/expected/<tier>.json) or a prediction."""

from __future__ import annotations

import pytest

from reproduce.experiments import PAPERS, TIERS
from reproduce.judge import catalogue, declared, measured

VERDICTS = {"reproduced", "not_reproduced", "inconclusive", "error"}
CLAIMS = declared()


def test_every_declared_claim_has_the_paper_s_words_and_every_catalogue_entry_a_declaration():
    words = {i for p in PAPERS for i in catalogue(p)}
    assert words == set(CLAIMS)
    for claim in CLAIMS.values():
        assert {"section", "statement", "paper_value", "control"} <= set(claim.text), claim.id
        assert not {"criterion", "tiers", "seeds", "setting"} & set(claim.text), (
            f"{claim.id}: the catalogue holds words only; criteria, tiers and settings are the code's")


@pytest.mark.parametrize("claim", CLAIMS.values(), ids=list(CLAIMS))
def test_case_ids_are_unique_and_a_control_says_what_it_is(claim):
    ids = [c.id for c in claim.cases]
    assert len(ids) == len(set(ids)), f"{claim.id}: repeated case ids {sorted(i for i in ids if ids.count(i) > 1)}"
    assert all(c.tier in TIERS for c in claim.cases)


@pytest.mark.parametrize("tier", TIERS)
def test_each_judged_tier_expects_one_verdict_measured_or_predicted(tier):
    record = measured(tier)
    for claim in CLAIMS.values():
        has_cases = bool(claim.cases_at(tier))
        is_measured, is_predicted = claim.id in record.get("verdicts", {}), tier in claim.predicted
        if not has_cases:
            assert not is_measured and not is_predicted, f"{claim.id} has no case at {tier} but an expectation there"
            continue
        assert is_measured != is_predicted, (
            f"{claim.id} at {tier}: {'both a measurement and a prediction' if is_measured else 'neither a measurement nor a prediction'}"
            f" (a measurement replaces the prediction: remove it from reproduce/claims/{claim.paper}.py)")
        verdict = record["verdicts"][claim.id] if is_measured else claim.predicted[tier][0]
        assert verdict in VERDICTS
        if is_predicted:
            assert len(claim.predicted[tier][1]) > 20, f"{claim.id} at {tier}: a prediction says why"


@pytest.mark.parametrize("tier", [t for t in TIERS if measured(t)])
def test_a_measurement_cites_its_run_and_holds_every_case(tier):
    record = measured(tier)
    assert "commit" in record["source"] and record["tier"] == tier
    for claim_id, cases in record["cases"].items():
        assert set(cases) == {c.id for c in CLAIMS[claim_id].cases_at(tier)}, claim_id
