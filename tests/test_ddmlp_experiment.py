"""The ddmlp experiment end to end on a tiny setting: what a run stores, and that it is consistent."""

import numpy as np
import pytest
import torch

from reproduce.engine import TrainSpec, log_schedule
from reproduce.experiments import ddmlp


@pytest.fixture(scope="module")
def tiny_run(fashion_mnist):
    spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=50, epochs=2, checkpoints=log_schedule(2, first=0.5))
    run = ddmlp.Run("mlp3", (16, 8), "fashion_mnist", 0.3, spec, seed=4, n_train=400, n_test=100)
    return ddmlp.execute(run, torch.device("cpu"))


def test_noise_mask_and_labels_are_stored(tiny_run):
    noisy = tiny_run.isel(replica=list(tiny_run.setting.values).index("noisy"))
    control = tiny_run.isel(replica=list(tiny_run.setting.values).index("control"))
    mask = noisy.noisy_mask.values.astype(bool)
    original = tiny_run.original_label.values
    assert (noisy.label.values[mask] != original[mask]).all()  # flip: always wrong
    assert (noisy.label.values[~mask] == original[~mask]).all()
    assert (control.label.values == original).all()  # the control only tags
    assert (control.noisy_mask.values == noisy.noisy_mask.values).all()  # ... the very same samples
    assert float(noisy.noisy_fraction) == pytest.approx(mask.mean())
    assert 0.2 < mask.mean() < 0.4


def test_samples_map_back_to_the_full_data_set(tiny_run):
    index = tiny_run.sample.values
    assert len(np.unique(index)) == 400 and index.min() >= 0 and index.max() < 60_000
    counts = np.bincount(tiny_run.original_label.values, minlength=10)
    assert (counts == 40).all()  # stratified


def test_probe_variables_have_named_dimensions(tiny_run):
    assert tiny_run.accuracy.dims == ("epoch", "replica", "split")
    assert tiny_run.cs.dims == ("epoch", "replica", "layer", "class")
    assert tiny_run.magnitude.dims == ("epoch", "replica", "layer", "neuron")
    assert list(tiny_run.epoch.values) == [0.0, 0.5, 1.0, 2.0]
    assert list(tiny_run.layer_width.values) == [16, 8]
    assert str(tiny_run.model.values) == "mlp3"
    assert np.isnan(tiny_run.magnitude.sel(layer=2, neuron=12)).all()  # padding past layer 2's width
