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


def _tiny(spec_batch: int = 64):
    from reproduce.models import StackedMLP
    from reproduce.spec import TrainSpec

    return StackedMLP((1, 4, 4), (8,), 3, seeds=[0, 1]), TrainSpec(optimizer="adam", lr=1e-3, batch_size=spec_batch, epochs=1)


def test_a_cpu_tier_run_is_timed_at_its_own_batch_and_a_gpu_tier_run_by_extrapolation(monkeypatch):
    """`seconds_per_step` with a CPU tier's `samples` builds only steps of the run's own batch, on a
    pool of the run's own samples; without them, or with a GPU tier's 60,000, it grows the batch from 1."""
    import torch

    from reproduce import timing

    built = []
    real = timing.make_step

    def recording(model, spec, data, y, batch):
        built.append((batch, data.shape[0]))
        return real(model, spec, data, y, batch)

    monkeypatch.setattr(timing, "make_step", recording)
    for samples in (500, None, 60_000):
        built.clear()
        timing._CALIBRATED.clear(), timing._FAMILIES.clear()
        model, spec = _tiny()
        assert timing.seconds_per_step(model, (1, 4, 4), 3, spec, torch.device("cpu"), samples=samples) > 0
        if samples == 500:
            assert built == [(64, 500)]
        else:
            assert built[0][0] == 1 and len(built) >= 2, built
    assert timing.own_batch(timing.CPU_TIER_SAMPLES) and not timing.own_batch(timing.CPU_TIER_SAMPLES + 1)
    assert not timing.own_batch(None)


def test_own_step_seconds_is_the_median_of_groups_so_one_slowed_group_does_not_move_it(monkeypatch):
    """Planted: a step that sleeps 4 ms, and 40 ms through the third timed group (another process on
    the core): the answer stays near 4 ms, from groups of about `group_s`; the minimum of the old
    calibration and the mean would not be the run's typical step (the mean is pulled to 10 ms)."""
    import time

    import torch

    from reproduce import timing

    calls = {"n": 0}
    warm_up, group = 2, 5  # the two warm-up steps; 0.02 s groups of 4 ms steps: the slowed stretch spans one or two groups

    class Sleepy:
        graphed = False

        def __call__(self, index):
            calls["n"] += 1
            slowed = warm_up + 2 * group < calls["n"] <= warm_up + 3 * group
            time.sleep(0.040 if slowed else 0.004)

    monkeypatch.setattr(timing, "make_step", lambda *args: Sleepy())
    model, spec = _tiny()
    seconds = timing.own_step_seconds(model, (1, 4, 4), 3, spec, torch.device("cpu"), 500, group_s=0.02, groups=5)
    assert calls["n"] >= warm_up + 5 * 2  # groups of several steps (5 where a sleep is exact)
    assert 0.004 <= seconds < 0.010  # the mean of the groups would be about 11 ms
    assert timing.robust_step_seconds([1.0, 1.1, 0.9, 5.0, 1.0]) == 1.0
    assert timing.robust_step_seconds([1.0, 3.0]) == 2.0


def test_estimate_keeps_a_run_timed_at_its_own_batch_and_fits_a_line_through_extrapolated_ones(monkeypatch):
    """Planted: three runs of one family whose own timings are not on a line through 0 in the FLOPs
    (2, 3 and 6 ms per step at 1, 2 and 3 GFLOPs): timed at their own batch, each keeps its timing;
    extrapolated (a GPU tier's on a CPU), they get the family's line."""
    import types

    import torch

    from reproduce import runner
    from reproduce.spec import TrainSpec

    spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=64, epochs=10)
    runs = [types.SimpleNamespace(name=f"r{i}", train=spec, replicas=[0, 1], gflops=i) for i in (1, 2, 3)]
    own_seconds = {1: 0.002, 2: 0.003, 3: 0.006}
    for own in (True, False):
        exp = types.SimpleNamespace(steps_and_flops=lambda run: (100, 100 * run.gflops * 1e9),
                                    calibrate=lambda run, dev: own_seconds[run.gflops],
                                    timed_at_own_batch=lambda run, own=own: own)
        monkeypatch.setattr(runner, "plan", lambda *args: [("fake", run) for run in runs])
        monkeypatch.setattr(runner, "experiment", lambda paper: exp)
        seconds = [row[-1] for row in runner.estimate("small", ["fake"], torch.device("cpu"))]
        if own:
            assert seconds == pytest.approx([100 * own_seconds[i] for i in (1, 2, 3)])
        else:
            assert seconds != pytest.approx([100 * own_seconds[i] for i in (1, 2, 3)])
            assert seconds == sorted(seconds)


@pytest.mark.parametrize("paper", ["ddmlp", "masc"])
def test_the_cpu_tiers_runs_are_timed_at_their_own_batch_and_the_gpu_tiers_are_not(paper):
    from reproduce.experiments import experiment

    exp = experiment(paper)
    for tier, own in (("quick", True), ("small", True), ("medium", False), ("full", False)):
        assert all(exp.timed_at_own_batch(run) == own for run in exp.runs(tier)), (paper, tier)


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
