"""The claim catalogue (data/claims/*.json) and the claim tests agree on where each claim is judged."""

from __future__ import annotations

import pytest

from claims.conftest import TIER_ORDER, tiers_judged
from reproduce.experiments import PAPERS
from reproduce.report import catalogue

VERDICTS = {"reproduced", "not_reproduced", "not_at_tier"}


@pytest.fixture(scope="module")
def collected(pytestconfig: pytest.Config) -> dict[str, dict[str, str]]:
    """claim id -> {tier: expected verdict} from collecting claims/ (nothing runs)."""
    items: list[pytest.Item] = []

    class Collect:
        def pytest_collection_finish(self, session: pytest.Session) -> None:
            items.extend(session.items)

    root = pytestconfig.rootpath
    code = pytest.main([str(root / "claims"), "--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[Collect()])
    assert code == 0, f"collecting claims/ failed (exit {code})"
    return tiers_judged(items)


@pytest.mark.parametrize("paper", PAPERS)
def test_every_claim_says_what_each_tier_expects(paper: str, collected: dict) -> None:
    for claim_id, entry in catalogue(paper).items():
        tiers = entry.get("tiers", {})
        assert set(tiers) == set(TIER_ORDER), f"{claim_id}: tiers must name {TIER_ORDER}, has {sorted(tiers)}"
        assert set(tiers.values()) <= VERDICTS, f"{claim_id}: tiers values must be among {sorted(VERDICTS)}"
        judged = {t: v for t, v in tiers.items() if v != "not_at_tier"}
        assert collected.get(claim_id, {}) == judged, (
            f"{claim_id}: the claim tests judge {collected.get(claim_id, {})}, the catalogue says {judged}")
