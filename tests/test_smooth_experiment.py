"""The smooth experiment end to end on a tiny setting: what a run stores, and the sweep helpers;
the small and medium paths shrunk to CPU size through their claim cases."""

import numpy as np
import pytest
import torch
import xarray as xr

from reproduce.engine import TrainSpec
from reproduce.experiments import smooth
from reproduce.experiments.shrink import SHRINK_ENV
from reproduce.figures.smooth import sweep, threshold_of, thresholds
from reproduce.measures.sharpness import VolumeSpec, interpolation_threshold, peak_at_threshold
from reproduce.verdict import StatisticError


@pytest.fixture(scope="module")
def tiny_runs(fashion_mnist):
    spec = TrainSpec(optimizer="sgd", lr=0.05, batch_size=50, epochs=1, warmup_epochs=0.5)
    volumes = VolumeSpec(paths=2, strengths=2, hessian_directions=2, chunk=64)
    out = []
    for w in (1, 2):
        run = smooth.Run("tiny", w, "fashion_mnist", "flip", 0.2, spec, volumes, seed=3, seeds=2,
                         n_train=101, n_test=50, downsample=2)
        out.append(smooth.execute(run, torch.device("cpu")).expand_dims(run=[run.name]))
    return xr.concat(out, "run", data_vars="all", coords="different", compat="equals", join="outer")


def test_exactly_round_n_p_labels_flipped(tiny_runs):
    one = tiny_runs.isel(run=0)
    mask = one.noisy_mask.values.astype(bool)  # (replica, sample)
    assert (mask.sum(1) == round(101 * 0.2)).all()
    assert (one.label.values[mask] != np.broadcast_to(one.original_label.values, mask.shape)[mask]).all()
    assert not (mask[0] == mask[1]).all()  # each seed its own noise
    assert (tiny_runs.isel(run=1).noisy_mask.values == one.noisy_mask.values).all()  # same noise at every width


def test_probe_variables_and_sweep(tiny_runs):
    assert tiny_runs.volume_measure.dims == ("run", "epoch", "replica", "measure", "subset", "volume")
    assert list(tiny_runs.epoch.values) == [0.0, 1.0]
    assert list(tiny_runs.volume.values) == [0, 1, 2]
    sw = sweep(tiny_runs, "tiny")
    assert list(sw.width.values) == [1, 2]
    jac = sw.volume_measure.sel(measure="jacobian", volume=0)
    all_, clean, noisy = (jac.sel(subset=s).values for s in ("all", "clean", "noisy"))
    np.testing.assert_allclose(all_, 0.8 * clean + 0.2 * noisy, rtol=0.05)  # 20 of 101 noisy
    assert np.isnan(sw.volume_measure.sel(subset="untouched")).all()  # flip touches every class
    assert threshold_of(tiny_runs, "tiny", 1.1) == 1
    assert thresholds(tiny_runs, "tiny", 1.1) == [1, 1]  # one per seed
    assert sweep(tiny_runs, "tiny", seeds=True).volume_measure.sizes["replica"] == 2


def test_threshold_and_peak_criterion_on_planted_sweeps():
    widths = [1, 2, 3, 4, 6, 8]
    assert interpolation_threshold(widths, [0.3, 0.1, 0.02, 0.0, 0.0, 0.0], 0.01) == 4
    assert interpolation_threshold(widths, [0.3] * 6, 0.01) is None
    peaked = peak_at_threshold(widths, [1, 5, 9, 4, 2, 1], threshold=4)
    assert peaked["holds"] and peaked["peak_width"] == 3 and peaked["ratio"] == pytest.approx(1 / 9)
    assert not peak_at_threshold(widths, [1, 9, 5, 4, 2, 1], threshold=4)["holds"]  # two steps away
    assert not peak_at_threshold(widths, [1, 5, 9, 8, 7, 6], threshold=4)["holds"]  # no fall
    assert not peak_at_threshold(widths, [1, 5, 9, 4, 2, 1], threshold=None)["holds"]
    with pytest.raises(StatisticError, match=r"width\(s\) \[3\]"):  # a NaN width is never dropped silently
        peak_at_threshold(widths, [1, 5, float("nan"), 4, 2, 1], threshold=4)
    with pytest.raises(StatisticError, match="training error"):
        interpolation_threshold(widths, [0.3, float("nan"), 0.0, 0.0, 0.0, 0.0], 0.01)


def test_quick_tier_is_the_stated_sweep(monkeypatch):
    monkeypatch.delenv(SHRINK_ENV, raising=False)
    quick = smooth.runs("quick")
    assert [r.width for r in quick] == list(smooth.QUICK_WIDTHS) and all(r.seeds == 6 for r in quick)
    assert {r.train.optimizer for r in quick} == {"adam"} and all(r.train.weight_decay == 0 for r in quick)
    small = smooth.runs("small")
    assert [r.width for r in small] == list(smooth.SMALL_WIDTHS) and all(r.seeds == 4 for r in small)
    assert {(r.train.optimizer, r.train.momentum, r.n_train, r.downsample) for r in small} == {("sgd", 0.9, 500, 2)}
    assert all(r.volumes.hessian_directions == 4 and r.volumes.step == 0.1 for r in quick + small)
    medium = smooth.runs("medium")
    assert [r.width for r in medium] == list(smooth.MEDIUM_WIDTHS) and all(r.seeds == 3 for r in medium)
    assert all(r.dataset == "fashion_mnist" and r.downsample == 1 and r.noise == "flip" for r in medium)
    full = smooth.runs("full")
    assert {r.setting for r in full} == {"cifar10-flip20", "cifar100", "cifar100-asym"}
    assert len(full) == 3 * 64 and all(r.train.epochs == 4000 and r.seeds == 3 for r in full)


MEDIUM_CLAIMS = ("smooth.sharpness_peaks_at_threshold", "smooth.noisy_peak_higher", "smooth.hessian_peaks_too",
                 "smooth.volume_accuracy_grows")
SMALL_CLAIMS = MEDIUM_CLAIMS  # every claim from small on: the quick grid stops below the threshold (issue 32)


def test_small_and_medium_paths_shrunk_run_every_claim_case(shrunk_medium, monkeypatch, fashion_mnist):
    """The small and medium configurations, shrunk by REPRODUCE_SHRINK=1 to CPU size (same names,
    same code path), made and judged end to end: every case of the tier must run (not skip, not
    error) and claims.json must list each of its claims with its seeds (4 small, 3 medium). The
    verdicts wait for the real runs (small: one CPU, medium: a GPU)."""
    monkeypatch.setenv(SHRINK_ENV, "1")
    assert [r.name for r in smooth.runs("medium")] == [f"fmnist-flip20-w{w}-s0" for w in smooth.MEDIUM_WIDTHS[:3]]
    assert [r.name for r in smooth.runs("small")] == [f"{smooth.SMALL_SETTING}-w{w}-s0" for w in smooth.SMALL_WIDTHS[:3]]
    for tier, claims, seeds in (("small", SMALL_CLAIMS, 4), ("medium", MEDIUM_CLAIMS, 3)):
        stdout, entries = shrunk_medium("smooth", tier)
        assert set(entries) >= set(claims), stdout[-3000:]
        for claim_id in claims:
            cases = entries[claim_id]["cases"]
            assert len(cases) == 2, (tier, claim_id, stdout[-3000:])  # the main case and its control
            for case in cases:
                assert case["verdict"] not in ("not_run", "error"), (tier, claim_id, case["case"], case["message"])
                assert {c["n"] for c in case["conditions"]} == {seeds}, (tier, claim_id, case["case"])
