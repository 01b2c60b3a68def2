"""Every stored variable describes itself (CF long_name and units), so `ds.cs.plot()` labels its axes."""

import numpy as np
import pytest
import torch
import xarray as xr

from reproduce.engine import TrainSpec, log_schedule
from reproduce.experiments import ddmlp, masc, modnoise, smooth
from reproduce.measures.sharpness import VolumeSpec
from reproduce.store import ENGINE, Store, describe

CPU = torch.device("cpu")
# The experiments' tiny configurations (as in tests/test_*_experiment.py).
TINY = {
    "ddmlp": lambda: ddmlp.Run("mlp3", (16, 8), "fashion_mnist", 0.3, TrainSpec(
        optimizer="adam", lr=1e-3, batch_size=50, epochs=2, checkpoints=log_schedule(2, first=0.5)),
        seed=4, n_train=400, n_test=100),
    "masc": lambda: masc.Run("mlp-fashion_mnist", "mlp", (16, 8), "fashion_mnist", TrainSpec(
        optimizer="adam", lr=1e-3, batch_size=50, epochs=2), seed=3, n_train=300, n_test=100,
        retrain=TrainSpec(optimizer="adam", lr=1e-3, batch_size=50, epochs=3)),
    "modnoise": lambda: modnoise.Run("add", 9, (("flip", 0.8), ("resample", 0.5), ("tag", 0.8)), TrainSpec(
        optimizer="adamw", lr=3e-3, batch_size=0, epochs=3, weight_decay=1.0, checkpoints=log_schedule(3)), seed=2, p=7),
    "smooth": lambda: smooth.Run("tiny", 1, "fashion_mnist", "flip", 0.2, TrainSpec(
        optimizer="sgd", lr=0.05, batch_size=50, epochs=1, warmup_epochs=0.5),
        VolumeSpec(paths=2, strengths=2, hessian_directions=2, chunk=64), seed=3, seeds=2, n_train=101, n_test=50,
        downsample=2),
}
EXPERIMENTS = {"ddmlp": ddmlp, "masc": masc, "modnoise": modnoise, "smooth": smooth}


@pytest.mark.parametrize("paper", sorted(TINY))
def test_every_stored_variable_has_long_name_and_units(paper, tmp_path, request):
    if paper != "modnoise":
        request.getfixturevalue("fashion_mnist")
    run = TINY[paper]()
    ds = EXPERIMENTS[paper].execute(run, CPU)
    path = Store(tmp_path).write(ds, "quick", paper, "tiny", {"x": 1}, {"device": "cpu", "seed": 0})
    with xr.open_dataset(path, engine=ENGINE) as stored:
        assert stored.attrs["device_name"]
        for name in stored.variables:
            var = stored[name]
            assert var.attrs.get("long_name"), name
            if var.dtype.kind in "iuf":
                assert var.attrs.get("units"), name


def test_a_variable_without_a_row_is_not_stored(tmp_path):
    ds = xr.Dataset({"mystery": ("x", np.arange(3.0))}, coords={"epoch": [1.0, 2.0, 3.0]}).rename(x="epoch")
    with pytest.raises(ValueError, match="mystery.*VARIABLES"):
        Store(tmp_path).write(ds, "quick", "ddmlp", "r", {}, {})
    assert not list(tmp_path.rglob("*.nc"))


def test_describe_labels_the_plot_axes():
    ds = describe(xr.Dataset({"accuracy": ("epoch", [0.1, 0.5])}, coords={"epoch": [1.0, 10.0]}))
    from xarray.plot.utils import label_from_attrs

    assert label_from_attrs(ds.accuracy) == "accuracy [1]" and label_from_attrs(ds.epoch) == "training epoch [epoch]"
