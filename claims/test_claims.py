"""One test per declared claim and case (reproduce/claims/<paper>.py), marked with its tier:
`pytest claims -m quick` judges the quick cases. Each calls the same judge as the command line
(reproduce.judge.judge_tier, through the `judged` fixture) and fails where the claim regressed: a
measured expectation contradicted, or an error. A contradicted prediction is an expected failure
whose reason says so (xfail), never a pass; missing results skip with the command that makes them."""

from __future__ import annotations

import pytest

from reproduce.judge import Case, Claim, declared

CASES = [pytest.param(claim, case, id=f"{claim.id}:{case.id}", marks=getattr(pytest.mark, case.tier))
         for claim in declared().values() for case in claim.cases]


def _conditions(case: dict) -> str:
    return "; ".join(f"{j['name']} {j['op']} {j['threshold']:g}: {j['verdict']} (n={j['n']}, {j['aggregate']:.4g}"
                     + ("" if j["interval"] is None else " [{:.4g}, {:.4g}]".format(*j["interval"])) + ")"
                     for j in case["conditions"])


@pytest.mark.parametrize(("claim", "case"), CASES)
def test_claim(claim: Claim, case: Case, judged) -> None:
    entry = judged(case.tier, claim.paper)[claim.id]
    mine = next(c for c in entry["cases"] if c["case"] == case.id)
    if mine["verdict"] == "not_run":
        pytest.skip(mine["message"])
    said = (f"{claim.id} at {case.tier}: {entry['verdict']} ({entry['control']} control) against "
            f"{entry['expected']} ({entry['expectation_source']}); this case: {mine['verdict']} "
            f"{mine['message'] or _conditions(mine)}")
    assert not entry["regression"], said  # an error in a statistic is a regression: it fails here, never below
    if entry["as_expected"] is False:  # only a contradicted prediction is left: shown, not a failure
        pytest.xfail(f"prediction contradicted: {said}")
