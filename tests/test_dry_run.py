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
    assert re.search(r"^total: [\d.e+]+ FLOPs, about .+ on this device \(CPU .*\(1 threads\)\)", out, re.M)  # --threads
    assert re.search(r"^projection: .+ GPU-hours on one H100 SXM, ASSUMING 40%.+an assumption, not a measurement", out, re.M)


def test_family_fit_grows_with_flops_and_absorbs_a_slowed_timing():
    """Planted: 1 ms per step + 1 ns per FLOP, with the middle width timed 5x slow (a busy machine):
    the fitted times still rise with the FLOPs, and the largest width is not under its neighbours."""
    from reproduce.runner import _family_fit

    flops = [1e5, 2e5, 4e5, 8e5, 1.6e6]
    seconds = [1e-3 + 1e-9 * f for f in flops]
    seconds[2] *= 5
    fit = _family_fit(list(zip(flops, seconds)))
    fitted = [fit(f) for f in flops]
    assert fitted == sorted(fitted) and fitted[0] > 0
    assert fit(3.2e6) > fit(1.6e6)


def test_dry_run_estimate_grows_with_flops_within_a_paper():
    from reproduce.runner import estimate

    rows = estimate("full", ["modnoise"], __import__("torch").device("cpu"))
    by_op = {}
    for paper, run, steps, flops, _, seconds in rows:
        by_op.setdefault(run.name.split("-")[0], []).append((flops, seconds))
    for op, pairs in by_op.items():
        pairs.sort()
        assert [s for _, s in pairs] == sorted(s for _, s in pairs), (op, pairs)


def test_side_by_side_seconds_share_runs_in_plan_order_to_the_first_free_job():
    """The --jobs estimate: runs go in plan order to the process that frees first, as the store's lock
    shares them (MLP7 alone beside MLP5 then MLP3)."""
    from reproduce.runner import side_by_side_seconds

    assert side_by_side_seconds([10, 6, 4], 1) == 20
    assert side_by_side_seconds([10, 6, 4], 2) == 10
    assert side_by_side_seconds([5, 5, 5, 5], 2) == 10
    assert side_by_side_seconds([1, 9], 2) == 9 and side_by_side_seconds([], 2) == 0


def _rows(tier: str, paper: str, seconds: float) -> list:
    from reproduce.runner import plan

    return [(p, run, 1, 0.0, 1, seconds) for p, run in plan(tier, [paper])]


def test_a_run_shows_the_dry_runs_remembered_estimate_for_its_own_plan_and_threads_only(tmp_path):
    """The dry run remembers its seconds per run in this machine's cache; a run of the same plan on the
    same device and thread count reads them instead of timing anything. Another thread count, another
    config of a run, or a file that is not a dry run's estimate: said in one line, not used, left alone."""
    import dataclasses

    import torch

    from functools import partial

    from reproduce import runner
    from reproduce.runner import plan

    remember_estimate = partial(runner.remember_estimate, folder=tmp_path)
    remembered_estimate = partial(runner.remembered_estimate, folder=tmp_path)
    todo = plan("quick", ["ddmlp"])
    path = remember_estimate("quick", _rows("quick", "ddmlp", 12.0), "cpu", "tf32")
    assert path == tmp_path / "quick.json"
    remember_estimate("quick", _rows("quick", "smooth", 5.0), "cpu", "tf32")  # another paper: kept beside
    said: list[str] = []
    seconds = remembered_estimate("quick", todo + plan("quick", ["smooth"]), "cpu", "tf32", said.append)
    assert set(seconds.values()) == {12.0, 5.0} and len(seconds) == len(todo) + len(plan("quick", ["smooth"]))
    assert said == []

    other = [(p, dataclasses.replace(run, seed=run.seed + 1)) for p, run in todo]  # same names, other configs
    assert remembered_estimate("quick", other, "cpu", "tf32", said.append) is None
    assert "for other runs" in said[-1]

    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        assert remembered_estimate("quick", todo, "cpu", "tf32", said.append) is None
    finally:
        torch.set_num_threads(threads)
    assert "thread count" in said[-1]

    path.write_text('{"calibrated_on": 3')
    assert remembered_estimate("quick", todo, "cpu", "tf32", said.append) is None
    assert "not a dry run's estimate" in said[-1] and path.read_text() == '{"calibrated_on": 3'
    assert runner.remembered_estimate("quick", todo, "cpu", "tf32", said.append, tmp_path / "none") is None  # quiet
    assert len(said) == 3
