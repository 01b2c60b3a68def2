"""The smooth experiment end to end on a tiny setting: what a run stores, and the sweep helpers."""

import numpy as np
import pytest
import torch
import xarray as xr

from reproduce.engine import TrainSpec
from reproduce.experiments import smooth
from reproduce.figures.smooth import sweep, threshold_of
from reproduce.measures.sharpness import VolumeSpec, interpolation_threshold, peak_at_threshold


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


def test_threshold_and_peak_criterion_on_planted_sweeps():
    widths = [1, 2, 3, 4, 6, 8]
    assert interpolation_threshold(widths, [0.3, 0.1, 0.02, 0.0, 0.0, 0.0], 0.01) == 4
    assert interpolation_threshold(widths, [0.3] * 6, 0.01) is None
    peaked = peak_at_threshold(widths, [1, 5, 9, 4, 2, 1], threshold=4)
    assert peaked["holds"] and peaked["peak_width"] == 3 and peaked["ratio"] == pytest.approx(1 / 9)
    assert not peak_at_threshold(widths, [1, 9, 5, 4, 2, 1], threshold=4)["holds"]  # two steps away
    assert not peak_at_threshold(widths, [1, 5, 9, 8, 7, 6], threshold=4)["holds"]  # no fall
    assert not peak_at_threshold(widths, [1, 5, 9, 4, 2, 1], threshold=None)["holds"]


def test_quick_tier_is_the_stated_sweep():
    quick = smooth.runs("quick")
    assert [r.width for r in quick] == [1, 2, 3, 4, 6, 8, 12, 16]
    assert {r.train.optimizer for r in quick} == {"sgd"} and all(r.train.weight_decay == 0 for r in quick)
    full = smooth.runs("full")
    assert {r.setting for r in full} == {"cifar10-flip20", "cifar100", "cifar100-asym"}
    assert len(full) == 3 * 64 and all(r.train.epochs == 4000 and r.seeds == 3 for r in full)
