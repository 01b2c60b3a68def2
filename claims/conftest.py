"""The claim tests' plumbing: results on demand, one judgement per tier and paper, the report at the end.

- `--results DIR` (default results/) is the same store the command line uses; `--seed` and
  `--device` pick the runs, as they do there.
- The tier of a case is its marker (`-m quick` selects the quick cases). Quick results are made on
  demand in this process through the same function as `python -m reproduce` (runner.make_results);
  small, medium and full results must already be stored, otherwise their cases are skipped with the
  command that makes them. `--stored-only` makes nothing.
- Each tier and paper is judged once (reproduce.judge.judge_tier); after the session the entries
  judged are merged into DIR/TIER/report.md, report.html and claims.json (reproduce.report.publish).
"""

from __future__ import annotations

from pathlib import Path

import pytest

JUDGED = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("claims")
    group.addoption("--results", default="results", help="results store (default results/)")
    group.addoption("--seed", type=int, default=0, help="base seed of the runs (default 0)")
    group.addoption("--device", default="cpu", help="device for quick results made on demand")
    group.addoption("--stored-only", action="store_true", help="make no results, not even quick ones: judge what the "
                                                               "store holds")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[JUDGED] = {}


@pytest.fixture(scope="session")
def judged(request: pytest.FixtureRequest):
    """judged(tier, paper) -> that paper's claims.json entries at the tier, by claim id (judged once)."""
    from reproduce.judge import judge_tier
    from reproduce.runner import make_results
    from reproduce.store import Store

    config = request.config
    store, seed = Store(Path(config.getoption("--results"))), config.getoption("--seed")
    cache = config.stash[JUDGED]

    def entries(tier: str, paper: str) -> dict[str, dict]:
        if (tier, paper) not in cache:
            if tier == "quick" and not config.getoption("--stored-only"):
                make_results(tier, [paper], store.root, device=config.getoption("--device"), seed=seed, progress=False)
            cache[(tier, paper)] = judge_tier(store, tier, [paper], seed)
        return {e["id"]: e for e in cache[(tier, paper)][0]}

    return entries


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Merge what was judged into each tier's report."""
    from reproduce.report import publish

    config = session.config
    if hasattr(config, "workerinput"):
        return
    by_tier: dict[str, tuple[list, dict]] = {}
    for (tier, paper), (entries, results) in config.stash[JUDGED].items():
        judged, datasets = by_tier.setdefault(tier, ([], {}))
        judged += entries
        datasets[paper] = results[paper]
    for tier, (judged, datasets) in by_tier.items():
        publish(Path(config.getoption("--results")), tier, judged, datasets, config.getoption("--seed"))
