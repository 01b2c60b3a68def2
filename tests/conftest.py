"""Shared fixtures of the unit tests."""

import json
import os

import pytest

from reproduce.data import locate
from reproduce.errors import UserError


@pytest.fixture(scope="session", autouse=True)
def _own_estimates_cache(tmp_path_factory) -> None:
    """The tests' dry runs (many shrunk) remember their estimates in a cache of their own, not this
    machine's (runner.estimates_folder); subprocesses inherit it."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def fashion_mnist() -> None:
    """Skip, saying how to get it, where Debian's Fashion-MNIST is not installed."""
    try:
        locate("fashion_mnist", download=False)
    except UserError as error:
        pytest.skip(str(error))


@pytest.fixture
def shrunk_medium(tmp_path, monkeypatch):
    """judge(paper, tier="medium") -> (the entries as text, for messages; that paper's claims.json
    entries by id): the paper's medium (or small) runs shrunk to CPU size (REPRODUCE_SHRINK=1, same
    names, same code path) are made in tmp_path and every claim case of the tier is judged on them
    by the judge the command line and the claim tests call, and published to tmp_path/TIER."""
    from reproduce.experiments.shrink import SHRINK_ENV
    from reproduce.judge import judge_tier
    from reproduce.report import publish
    from reproduce.runner import make_results
    from reproduce.store import Store

    def judge(paper: str, tier: str = "medium") -> tuple[str, dict[str, dict]]:
        monkeypatch.setenv(SHRINK_ENV, "1")
        make_results(tier, [paper], tmp_path, device="cpu", seed=0, progress=False, log=lambda _: None)
        entries, results = judge_tier(Store(tmp_path), tier, [paper])
        publish(tmp_path, tier, entries, results)
        return json.dumps(entries, default=str)[-3000:], {e["id"]: e for e in entries if e["verdict"] != "not_at_tier"}

    return judge
