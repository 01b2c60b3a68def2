"""Shared fixtures of the unit tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reproduce.data import locate
from reproduce.errors import UserError


@pytest.fixture(scope="session")
def fashion_mnist() -> None:
    """Skip, saying how to get it, where Debian's Fashion-MNIST is not installed."""
    try:
        locate("fashion_mnist", download=False)
    except UserError as error:
        pytest.skip(str(error))


@pytest.fixture
def shrunk_medium(tmp_path, monkeypatch):
    """judge(paper, tier="medium") -> (pytest's output, that paper's claims.json entries by id): the
    paper's medium (or small) runs shrunk to CPU size (REPRODUCE_SHRINK=1, same names, same code
    path) are made in tmp_path and every claim case of the tier is judged on them; pytest's junit
    XML is at tmp_path/junit.xml."""
    from reproduce.experiments.shrink import SHRINK_ENV
    from reproduce.runner import make_results

    def judge(paper: str, tier: str = "medium") -> tuple[str, dict[str, dict]]:
        monkeypatch.setenv(SHRINK_ENV, "1")
        make_results(tier, [paper], tmp_path, device="cpu", seed=0, progress=False, log=lambda _: None)
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", f"claims/test_{paper}.py", "-m", tier, "--results", str(tmp_path),
             "--stored-only", "-q", "-p", "no:cacheprovider", "-rA", f"--junitxml={tmp_path / 'junit.xml'}"],
            cwd=Path(__file__).resolve().parent.parent, env={**os.environ, SHRINK_ENV: "1"},
            capture_output=True, text=True, timeout=600)
        entries = json.loads((tmp_path / tier / "claims.json").read_text())
        return proc.stdout, {e["id"]: e for e in entries if e["paper"] == paper}

    return judge
