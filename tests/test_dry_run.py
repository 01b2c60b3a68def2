"""Every tier's dry run finishes and prints its plan, its total and the GPU line (no timing assertion:
the dry-run times on the shared machine are in docs/speed.md)."""

import re

import pytest

from reproduce.cli import main


@pytest.mark.parametrize("tier", ["quick", "small", "medium", "full"])
def test_each_tiers_dry_run_finishes(tier, capsys):
    assert main(["--tier", tier, "--dry-run", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"plan for tier {tier} on cpu:")
    assert re.search(r"^total: [\d.e+]+ FLOPs, about .+ on this device", out, re.M)
    assert re.search(r"^projection: .+ GPU-hours on one H100 SXM, ASSUMING 40%.+an assumption, not a measurement", out, re.M)
